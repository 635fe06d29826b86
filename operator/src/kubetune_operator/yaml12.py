"""Resource documents read from YAML as the API server would receive them: JSON values, YAML 1.2.

PyYAML alone reads YAML 1.1 (`1e-4` is a string there, `yes` a boolean, `0777` octal), keeps the
last of two equal keys, expands aliases without limit and crashes on deep nesting in its C
composer. So libyaml's parser (C, linear, not recursive) gives the events, and the values are
built here, iteratively:

- scalars resolve by the YAML 1.2 core schema, as JSON would have them; `.nan`, `.inf` and numbers
  out of a double's range are refused (JSON has no such number);
- a key written twice in one mapping is refused with both lines (merge keys `<<` may be overridden,
  as YAML defines them);
- aliases are copied, within a budget: at most ALIAS_BUDGET values more than the document writes,
  as the API server refuses documents that expand past its own budget ("billion laughs");
- nesting deeper than MAX_DEPTH is refused; keys are strings, as JSON's are.

Every error names the line and column it is about.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

# Values (scalars, mappings, sequences) aliases may add to a document beyond those written in it.
ALIAS_BUDGET = 10_000
# Far deeper than any resource: the schemas nest about a dozen levels.
MAX_DEPTH = 100

_Parser = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_INT = re.compile(r"^[-+]?[0-9]+$")
_OCT = re.compile(r"^0o[0-7]+$")
_HEX = re.compile(r"^0x[0-9a-fA-F]+$")
_FLOAT = re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$")
_SPECIAL_FLOAT = re.compile(r"^(?:[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$")
_TAG = "tag:yaml.org,2002:"


class YamlError(ValueError):
    """A document that is no resource document; `line` and `column` count from 1."""

    def __init__(self, mark: Any, message: str):
        super().__init__(message)
        self.line = mark.line + 1 if mark is not None else None
        self.column = mark.column + 1 if mark is not None else None
        self.message = message


@dataclass
class _Frame:
    value: dict | list
    mark: Any
    anchor: str | None
    size: int = 1  # values in it once aliases are expanded, itself included
    key: str | None = None  # a mapping's key waiting for its value
    merge: bool = False  # that key is the merge key <<
    lines: dict[str, int] = field(default_factory=dict)  # a mapping's keys: where each was written
    merges: list[dict] = field(default_factory=list)


def _number(text: str, mark: Any) -> int | float:
    if _OCT.match(text):
        return int(text[2:], 8)
    if _HEX.match(text):
        return int(text[2:], 16)
    if _INT.match(text):
        return int(text, 10)
    value = float(text)
    if not math.isfinite(value):
        raise YamlError(mark, f"{text} is out of range for a number (JSON has no infinity)")
    return value


def _plain(text: str, mark: Any) -> Any:
    """A plain scalar by the YAML 1.2 core schema."""
    if _NULL.match(text):
        return None
    if text in _BOOL:
        return _BOOL[text]
    if _INT.match(text) or _OCT.match(text) or _HEX.match(text) or _FLOAT.match(text):
        return _number(text, mark)
    if _SPECIAL_FLOAT.match(text):
        raise YamlError(mark, f"{text} is not a number a resource can hold (JSON has no NaN or infinity)")
    return text


def _scalar(event: yaml.ScalarEvent) -> Any:
    tag = event.tag
    if tag in (None, "!"):
        plain = event.implicit[0] and tag is None
        return _plain(event.value, event.start_mark) if plain else event.value
    if tag == _TAG + "str":
        return event.value
    if tag in (_TAG + "int", _TAG + "float"):
        try:
            number = _number(event.value, event.start_mark)
            if tag.endswith("float"):
                return float(number)
            if isinstance(number, int):
                return number
        except ValueError:
            pass
        raise YamlError(event.start_mark, f"{event.value!r} is not a{'n int' if tag.endswith('int') else ' float'}")
    if tag in (_TAG + "bool", _TAG + "null"):
        value = _plain(event.value, event.start_mark)
        if (tag.endswith("bool") and not isinstance(value, bool)) or (tag.endswith("null") and value is not None):
            raise YamlError(event.start_mark, f"{event.value!r} is not a {tag[len(_TAG):]}")
        return value
    raise YamlError(event.start_mark, f"tag {tag} is not allowed in a resource (JSON values only)")


def _key(event: yaml.Event) -> str:
    """Keys are strings, as JSON has them: a scalar key is taken as written."""
    if not isinstance(event, yaml.ScalarEvent):
        raise YamlError(event.start_mark, "a mapping key must be a scalar, not a mapping or a list")
    if event.tag not in (None, "!", _TAG + "str"):
        _scalar(event)  # refuses what no scalar may be (.nan, unknown tags)
    return event.value


def load_all(text: str) -> Iterator[tuple[int, Any]]:
    """(line, value) of every document in `text`; YamlError or yaml.YAMLError (with a mark) otherwise."""
    stack: list[_Frame] = []
    anchors: dict[str, tuple[Any, int]] = {}
    expanded = 0
    start_line = 1
    root: Any = None

    def add(value: Any, size: int, anchor: str | None, mark: Any) -> None:
        nonlocal root
        if anchor is not None:
            anchors[anchor] = (value, size)
        if not stack:
            root = value
            return
        frame = stack[-1]
        frame.size += size
        if isinstance(frame.value, list):
            frame.value.append(value)
            return
        key, frame.key = frame.key, None
        if frame.merge:
            frame.merge = False
            merged = value if isinstance(value, list) else [value]
            if not all(isinstance(item, dict) for item in merged):
                raise YamlError(mark, "a merge key (<<) takes a mapping or a list of mappings")
            frame.merges.extend(merged)
            return
        frame.value[key] = value

    for event in yaml.parse(text, Loader=_Parser):
        if isinstance(event, yaml.DocumentStartEvent):
            anchors.clear()
            expanded = 0
            root = None
            start_line = event.start_mark.line + 1
        elif isinstance(event, yaml.DocumentEndEvent):
            yield start_line, root
        elif stack and isinstance(stack[-1].value, dict) and stack[-1].key is None and not isinstance(
            event, yaml.MappingEndEvent
        ):
            _take_key(stack[-1], event)
        elif isinstance(event, yaml.ScalarEvent):
            add(_scalar(event), 1, event.anchor, event.start_mark)
        elif isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
            if event.tag not in (None, "!", _TAG + "map", _TAG + "seq"):
                raise YamlError(event.start_mark, f"tag {event.tag} is not allowed in a resource (JSON values only)")
            if len(stack) >= MAX_DEPTH:
                raise YamlError(event.start_mark, f"nested deeper than {MAX_DEPTH} levels")
            empty: dict | list = {} if isinstance(event, yaml.MappingStartEvent) else []
            stack.append(_Frame(empty, event.start_mark, event.anchor))
        elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
            frame = stack.pop()
            if isinstance(frame.value, dict):
                for merged in frame.merges:
                    for key, value in merged.items():
                        frame.value.setdefault(key, value)
            add(frame.value, frame.size, frame.anchor, frame.mark)
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor not in anchors:
                raise YamlError(
                    event.start_mark,
                    f"alias *{event.anchor} names no anchor before it (an alias cannot name a node it is inside)",
                )
            value, size = anchors[event.anchor]
            expanded += size
            if expanded > ALIAS_BUDGET:
                raise YamlError(
                    event.start_mark,
                    f"aliases expand this document by more than {ALIAS_BUDGET} values; write it out instead",
                )
            add(copy.deepcopy(value), size, None, event.start_mark)


def _take_key(frame: _Frame, event: yaml.Event) -> None:
    if isinstance(event, yaml.AliasEvent):
        raise YamlError(event.start_mark, "a mapping key must be written out, not an alias")
    key = _key(event)
    mark = event.start_mark
    merge = key == "<<" and isinstance(event, yaml.ScalarEvent) and event.implicit[0] and event.tag is None
    if not merge:
        if key in frame.lines:
            raise YamlError(mark, f"key {key!r} appears twice in one mapping (first on line {frame.lines[key]})")
        frame.lines[key] = mark.line + 1
    frame.key = key
    frame.merge = merge
    frame.size += 1
