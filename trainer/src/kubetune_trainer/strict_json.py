"""JSON read the same way wherever users' JSON comes in: rows, dataset_info.json, test sets.

The parsers each reader would reach for disagree: orjson keeps the last of two equal keys and
refuses NaN; Python's json keeps the last key too, reads NaN, Infinity and 1e999 as floats (which
orjson then writes as null), and raises RecursionError on deep nesting. Here every one of these is
a JSONProblem naming what is wrong: a key written twice in one object, a number JSON cannot hold,
nesting past MAX_DEPTH, or invalid JSON.

Duplicate keys cost nothing on the common path: every key in the text ends with `"` and `:`
(whitespace between), and a string can only hold `"` escaped, so when the parsed value has as
many keys as the text has such endings no key can have been written twice; only otherwise is the
text parsed again, pair by pair.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import orjson

# orjson's own limit; Python's parser, which reads JSON arrays, is held to it too.
MAX_DEPTH = 1024
_KEY_END_BYTES = re.compile(rb'"[ \t\n\r]*:')
_KEY_END_TEXT = re.compile(r'"[ \t\n\r]*:')


class JSONProblem(ValueError):
    """`kind` is "syntax", "duplicate", "number" or "depth"; the message says what and where."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message


class _NotFinite(Exception):
    def __init__(self, text: str):
        self.text = text


def _refuse_constant(text: str) -> Any:
    raise _NotFinite(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotFinite(text)
    return value


def _keys(value: Any) -> int:
    """How many keys the objects in `value` hold, all levels (iteratively: values may be deep)."""
    count, pending = 0, [value]
    while pending:
        item = pending.pop()
        if type(item) is dict:
            count += len(item)
            pending.extend(item.values())
        elif type(item) is list:
            pending.extend(item)
    return count


def _first_duplicate(text: str | bytes) -> str | None:
    found: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict:
        seen: set[str] = set()
        for key, _ in items:
            if key in seen and not found:
                found.append(key)
            seen.add(key)
        return dict(items)

    try:
        json.loads(text, object_pairs_hook=pairs, parse_constant=lambda constant: None)
    except (RecursionError, ValueError):
        return None
    return found[0] if found else None


def duplicate_key(text: str | bytes, value: Any) -> str | None:
    """A key written twice in one object of `text`, which parsed to `value`; None when there is none."""
    endings = _KEY_END_BYTES if isinstance(text, bytes) else _KEY_END_TEXT
    if len(endings.findall(text)) == _keys(value):
        return None
    return _first_duplicate(text)


def _shown(key: str) -> str:
    return repr(key) if len(key) <= 40 else repr(key[:39]) + "…"


def check(text: str | bytes, value: Any) -> None:
    """JSONProblem when `text`, which a parser read as `value`, wrote a key twice."""
    key = duplicate_key(text, value)
    if key is not None:
        raise JSONProblem("duplicate", f"key {_shown(key)} appears twice in one object")


def loads(text: str | bytes) -> Any:
    """The value of a JSON text, or JSONProblem."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise diagnose(text, exc) from None
    check(text, value)
    return value


def diagnose(text: str | bytes, exc: ValueError) -> JSONProblem:
    """Why a text orjson refused is no JSON value: the number JSON has none of, the depth, or its syntax."""
    message = str(exc)
    if "depth limit" in message or "recursion" in message:
        return JSONProblem("depth", f"nested deeper than {MAX_DEPTH} levels")
    try:
        json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except _NotFinite as found:
        return JSONProblem("number", f"{found.text} is not a number JSON can hold")
    except (RecursionError, ValueError):
        pass
    return JSONProblem("syntax", f"not valid JSON ({message})")


def decoder() -> json.JSONDecoder:
    """Python's decoder (it reads JSON arrays element by element), refusing what orjson refuses:
    NaN, Infinity and numbers beyond a double raise JSONProblem("number")."""
    return _Decoder()


class _Decoder(json.JSONDecoder):
    def __init__(self) -> None:
        super().__init__(parse_constant=_refuse_constant, parse_float=_finite_float)

    def raw_decode(self, s: str, idx: int = 0) -> tuple[Any, int]:
        try:
            return super().raw_decode(s, idx)
        except _NotFinite as found:
            raise JSONProblem("number", f"{found.text} is not a number JSON can hold") from None
        except RecursionError:
            raise JSONProblem("depth", f"nested deeper than Python's parser goes (at most {MAX_DEPTH} levels)") from None


def value_end(text: str, start: int) -> int | None:
    """Where the JSON value starting at `start` ends (its brackets and strings matched, nothing
    parsed, so depth costs nothing); None when `text` ends first. For stepping over an element
    the parser refused."""
    depth, position, length = 0, start, len(text)
    while position < length:
        char = text[position]
        if char == '"':
            position += 1
            while position < length and text[position] != '"':
                position += 2 if text[position] == "\\" else 1
            if position >= length:
                return None
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
            if depth <= 0:
                return position + 1 if depth == 0 else position
        elif depth == 0 and char in ", \t\r\n":
            return position
        position += 1
    return None
