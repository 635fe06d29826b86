"""Validate resource documents the way the API server does, with no API server.

Order as in kube-apiserver: defaults from the schema, then the structural schema (with unknown
fields rejected, as `kubectl apply`'s strict field validation does), then the CEL rules
(`x-kubernetes-validations`, transition rules only on update). Every error names its field path.
`kubetune run`, `kubetune render` and the tests use this; the cluster uses the same CRDs.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any

import celpy
import jsonschema
import re2
from pydantic import ValidationError

from kubetune_operator.api import API_VERSION, KINDS, Resource
from kubetune_operator.api.crd import openapi_schema
from kubetune_operator.api.resource import LABEL_KEY_PATTERN, MAX_NAMESPACE_LENGTH, NAMESPACE_PATTERN
from kubetune_operator.api.schema import prune_nulls
from kubetune_operator.errors import ValidationFailed, clip, shorten

DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS_LABEL = re.compile(NAMESPACE_PATTERN)


@dataclass(frozen=True)
class FieldError:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


def _path(parts) -> str:
    text = ""
    for part in parts:
        # A map key is the user's text too: a 50 MB one must not come back whole.
        part = part if isinstance(part, int) else shorten(str(part))
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


@cache
def _schema(kind: str) -> dict[str, Any]:
    return openapi_schema(KINDS[kind])


def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema for jsonschema: unknown fields are errors (kubectl's --validate=strict)."""
    node = {k: v for k, v in schema.items() if not k.startswith("x-kubernetes")}
    if "properties" in node:
        node["properties"] = {k: _strict(v) for k, v in node["properties"].items()}
        node["additionalProperties"] = False
    elif isinstance(node.get("additionalProperties"), dict):
        node["additionalProperties"] = _strict(node["additionalProperties"])
    if "items" in node:
        node["items"] = _strict(node["items"])
    return node


def _pattern(validator, pattern: str, instance: Any, schema: dict[str, Any]):
    """`pattern` as the API server (Go's RE2) reads it: `$` is the end of the text. Python's `$` also
    matches before a final newline, which let `file://./m\\n` through."""
    if validator.is_type(instance, "string") and re2.search(pattern, instance) is None:
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


# Sub-documents found valid, by schema and content: documents repeat most of theirs (the defaults
# fill in whole blocks), and a subschema's verdict depends on nothing outside it.
_VALID: set[tuple[int, str]] = set()
_VALID_LIMIT = 1 << 16


def _properties(validator, properties: dict[str, Any], instance: Any, schema: dict[str, Any]):
    if not validator.is_type(instance, "object"):
        return
    for name, subschema in properties.items():
        if name not in instance:
            continue
        value = instance[name]
        key = (id(subschema), json.dumps(value, sort_keys=True)) if isinstance(value, dict | list) else None
        if key in _VALID:
            continue
        errors = list(validator.descend(value, subschema, path=name, schema_path=name))
        if key is not None and not errors:
            if len(_VALID) >= _VALID_LIMIT:
                _VALID.clear()
            _VALID.add(key)
        yield from errors


_Validator = jsonschema.validators.extend(
    jsonschema.Draft4Validator, {"pattern": _pattern, "properties": _properties}
)


@cache
def _validator(kind: str) -> jsonschema.Draft4Validator:
    schema = _strict(_schema(kind))
    schema["properties"]["metadata"] = {"type": "object"}
    schema["properties"].pop("status", None)
    return _Validator(schema)


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Fill in schema defaults top-down, as the API server does before validating."""
    if isinstance(value, dict) and "properties" in schema:
        for name, child in schema["properties"].items():
            if name not in value and "default" in child:
                value[name] = copy.deepcopy(child["default"])
            if name in value:
                value[name] = apply_defaults(child, value[name])
    elif isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key in value:
            value[key] = apply_defaults(schema["additionalProperties"], value[key])
    elif isinstance(value, list) and "items" in schema:
        return [apply_defaults(schema["items"], item) for item in value]
    return value


def _as_cel_types(schema: dict[str, Any], value: Any) -> Any:
    """The value as the API server hands it to CEL: a `number` field is a double even when written
    as `0`, so `self.temperature == 0.0` holds for it (CEL has no int == double overload)."""
    if schema.get("type") == "number" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, dict) and "properties" in schema:
        return {k: _as_cel_types(schema["properties"].get(k, {}), v) for k, v in value.items()}
    if isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        return {k: _as_cel_types(schema["additionalProperties"], v) for k, v in value.items()}
    if isinstance(value, list) and "items" in schema:
        return [_as_cel_types(schema["items"], v) for v in value]
    return value


@cache
def _program(rule: str):
    env = celpy.Environment()
    return env.program(env.compile(rule))


# `self.a.b` in a rule, and whether a call follows (`self.name.matches(`: the path is `name`).
_SELF_PATH = re.compile(r"\bself((?:\.[A-Za-z_][A-Za-z0-9_]*)*)(\s*\()?")
# How a rule reads a field: its value, only its size (`size(self.x)`), only whether it is there (`has(self.x)`).
VALUE, SIZE, PRESENCE = "value", "size", "presence"
Reads = tuple[tuple[tuple[str, ...], str], ...]


@cache
def _reads(rule: str) -> Reads | None:
    """The fields of `self` a rule reads and how, shortest first; None when it reads `self` whole."""
    how: dict[tuple[str, ...], set[str]] = {}
    for match in _SELF_PATH.finditer(rule):
        parts = tuple(part for part in match.group(1).split(".") if part)
        if match.group(2):
            parts = parts[:-1]
        if not parts:
            return None
        wrapped = rule[match.end() :].startswith(")") and not match.group(2)
        before = rule[: match.start()]
        kind = SIZE if wrapped and before.endswith("size(") else PRESENCE if wrapped and before.endswith("has(") else VALUE
        how.setdefault(parts, set()).add(kind)
    paths = {path: kinds.pop() if len(kinds) == 1 else VALUE for path, kinds in how.items()}
    for path, kind in paths.items():
        # A size stands in for a list or string; a field read below it needs the real thing.
        if kind == SIZE and any(len(other) > len(path) and other[: len(path)] == path for other in paths):
            paths[path] = VALUE
    kept: list[tuple[tuple[str, ...], str]] = []
    for path in sorted(paths, key=len):
        if not any(path[: len(prefix)] == prefix for prefix, kind in kept if kind == VALUE):
            kept.append((path, paths[path]))
    return tuple(kept)


def _stand_in(value: Any, kind: str) -> Any:
    """What a rule that reads only `kind` of `value` cannot tell from it."""
    if kind == PRESENCE:
        return {} if isinstance(value, dict) else None
    if kind == SIZE:
        if isinstance(value, list):
            return [None] * len(value)
        if isinstance(value, str):
            return "x" * len(value)
        if isinstance(value, dict):
            return dict.fromkeys(map(str, range(len(value))))
    return value


def _project(value: Any, paths: Reads | None) -> Any:
    """Only what a rule reads of `value` (absent fields stay absent, so has() answers alike)."""
    if paths is None or not isinstance(value, dict):
        return value
    projected: dict[str, Any] = {}
    for path, kind in paths:
        source, target = value, projected
        for depth, part in enumerate(path):
            if not isinstance(source, dict) or part not in source:
                break
            leaf = depth == len(path) - 1
            if leaf or not isinstance(source[part], dict):
                # Whatever stands in for a field, its value wins; below a field that is no mapping, so does it.
                if part not in target or kind == VALUE or not leaf:
                    target[part] = _stand_in(source[part], kind if leaf else VALUE)
                break
            source = source[part]
            if not isinstance(target.get(part), dict):
                target[part] = {}
            target = target[part]
    return projected


@lru_cache(maxsize=1 << 16)
def _outcome(rule: str, projected: str) -> bool | str:
    try:
        result = _program(rule).evaluate({"self": celpy.json_to_cel(json.loads(projected))})
    except celpy.CELEvalError as exc:
        return f"rule could not be evaluated: {exc.args[0]}"
    return bool(result)


_FIELD = r"self((?:\.[A-Za-z_][A-Za-z0-9_]*)*)"
_LITERAL = r"'([^'\\]*)'"
# Rules of these shapes on a string field are decided here exactly as celpy decides them (`in` for
# contains, len for size, the same re2.search for matches); anything else goes to celpy. They test
# values every document has its own of (names, URIs), which no cache would hold.
_SHORTCUTS: list[tuple[re.Pattern, Callable[[str, str], bool]]] = [
    (re.compile(rf"^!{_FIELD}\.contains\({_LITERAL}\)$"), lambda text, literal: literal not in text),
    (re.compile(rf"^size\({_FIELD}\) <= ([0-9]+)$"), lambda text, limit: len(text) <= int(limit)),
    (re.compile(rf"^{_FIELD}\.matches\({_LITERAL}\)$"), lambda text, pattern: re2.search(pattern, text) is not None),
]


@cache
def _shortcut(rule: str) -> tuple[tuple[str, ...], Callable[[str, str], bool], str] | None:
    for shape, decide in _SHORTCUTS:
        match = shape.match(rule)
        if match:
            return tuple(part for part in match.group(1).split(".") if part), decide, match.group(2)
    return None


def _decided_here(rule: str, value: Any) -> bool | None:
    """The outcome of a rule of a shortcut's shape on a string; None for celpy to decide."""
    shortcut = _shortcut(rule)
    if shortcut is None:
        return None
    path, decide, argument = shortcut
    for part in path:
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return decide(value, argument) if isinstance(value, str) else None


def _evaluate(rule: str, value: Any, old: Any) -> bool | str:
    """A rule's outcome. The interpreter is slow (a tenth of a millisecond and more a rule), and
    many documents repeat what a rule reads, so outcomes are kept by that alone: the fields of
    `self` the rule names."""
    if old is None:
        decided = _decided_here(rule, value)
        if decided is not None:
            return decided
        return _outcome(rule, json.dumps(_project(value, _reads(rule)), sort_keys=True))
    activation = {"self": celpy.json_to_cel(value), "oldSelf": celpy.json_to_cel(old)}
    try:
        result = _program(rule).evaluate(activation)
    except celpy.CELEvalError as exc:
        return f"rule could not be evaluated: {exc.args[0]}"
    return bool(result)


def _cel_errors(schema: dict[str, Any], value: Any, old: Any, path: list) -> list[FieldError]:
    errors: list[FieldError] = []
    for rule in schema.get("x-kubernetes-validations", []):
        is_transition = "oldSelf" in rule["rule"]
        if is_transition and old is None:
            continue
        outcome = _evaluate(rule["rule"], value, old if is_transition else None)
        if outcome is not True:
            field_path = path + [p for p in rule.get("fieldPath", "").split(".") if p]
            message = rule["message"] if outcome is False else f"{rule['message']} ({outcome})"
            errors.append(FieldError(_path(field_path), message))
    if isinstance(value, dict) and "properties" in schema:
        for name, child in schema["properties"].items():
            if name in value:
                child_old = old.get(name) if isinstance(old, dict) else None
                errors += _cel_errors(child, value[name], child_old, [*path, name])
    elif isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key, item in value.items():
            child_old = old.get(key) if isinstance(old, dict) else None
            errors += _cel_errors(schema["additionalProperties"], item, child_old, [*path, key])
    elif isinstance(value, list) and "items" in schema:
        # Transition rules follow list items only for map-type lists, which kubetune does not use.
        for index, item in enumerate(value):
            errors += _cel_errors(schema["items"], item, None, [*path, index])
    return errors


def check(document: Any, old: Any = None) -> list[FieldError]:
    """Every error in a document (and, on update, against the old object)."""
    return _checked(document, old)[0]


def _checked(document: Any, old: Any) -> tuple[list[FieldError], dict[str, Any]]:
    """Every error in a document, and the document with its defaults (once checked: valid)."""
    errors = _metadata_errors(document)
    if errors:
        return errors, document
    schema = _schema(document["kind"])
    document = apply_defaults(schema, prune_nulls(document))
    body = {k: v for k, v in document.items() if k != "status"}
    errors = [
        field_error
        for error in sorted(_validator(document["kind"]).iter_errors(body), key=lambda e: list(map(str, e.absolute_path)))
        for field_error in _schema_errors(error)
    ]
    if errors:
        return errors, document
    if old is not None:
        old = _as_cel_types(schema, apply_defaults(schema, prune_nulls(old)))
    cel_schema = {**schema, "properties": {k: v for k, v in schema["properties"].items() if k != "status"}}
    return _cel_errors(cel_schema, _as_cel_types(schema, body), old, []), document


def _metadata_errors(document: Any) -> list[FieldError]:
    """What the API server checks before the schema: apiVersion, kind, name, namespace."""
    if not isinstance(document, dict):
        return [FieldError("", "a resource document must be a mapping")]
    if document.get("apiVersion") != API_VERSION:
        return [FieldError("apiVersion", f"must be {API_VERSION} (got {clip(document.get('apiVersion'))})")]
    kind = document.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        return [FieldError("kind", f"must be one of {', '.join(KINDS)} (got {clip(kind)})")]
    metadata = document.get("metadata")
    if not isinstance(metadata, dict) or not isinstance(metadata.get("name"), str):
        return [FieldError("metadata.name", "is required")]
    if not DNS_SUBDOMAIN.fullmatch(metadata["name"]) or len(metadata["name"]) > 253:
        return [
            FieldError(
                "metadata.name",
                "must be lowercase letters, digits, '-' and '.', starting and ending with a letter or digit",
            )
        ]
    namespace = metadata.get("namespace")
    if namespace is not None and (
        not isinstance(namespace, str) or not DNS_LABEL.fullmatch(namespace) or len(namespace) > MAX_NAMESPACE_LENGTH
    ):
        return [
            FieldError(
                "metadata.namespace",
                f"must be a DNS-1123 label: at most {MAX_NAMESPACE_LENGTH} lowercase letters, digits and '-', "
                f"starting and ending with a letter or digit (got {clip(namespace)})",
            )
        ]
    return _label_errors(metadata.get("labels"), "metadata.labels", values=True) + _label_errors(
        metadata.get("annotations"), "metadata.annotations", values=False
    )


LABEL_KEY = re.compile(LABEL_KEY_PATTERN)
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
MAX_ANNOTATIONS_BYTES = 256 * 1024


def _label_errors(value: Any, where: str, values: bool) -> list[FieldError]:
    """Labels and annotations as the API server checks them: qualified-name keys, and label values
    of at most 63 characters or annotations of at most 256 KiB in all."""
    if value is None:
        return []
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        return [FieldError(where, "must be a map of strings to strings")]
    errors = []
    for key, item in value.items():
        name = key.rsplit("/", 1)[-1]
        if not LABEL_KEY.fullmatch(key) or len(name) > 63 or len(key) > 253:
            errors.append(FieldError(f"{where}.{shorten(key)}", "is not a valid key ([prefix/]name, name of at most 63 characters)"))
        elif values and (len(item) > 63 or not LABEL_VALUE.fullmatch(item)):
            errors.append(FieldError(f"{where}.{shorten(key)}", f"{clip(item)} is not a valid label value (at most 63 characters)"))
    if not values and sum(len(k.encode()) + len(v.encode()) for k, v in value.items()) > MAX_ANNOTATIONS_BYTES:
        errors.append(FieldError(where, "may hold at most 256 KiB in all"))
    return errors


def _schema_errors(error: jsonschema.ValidationError) -> list[FieldError]:
    parent = list(error.absolute_path)
    if error.validator == "additionalProperties":
        unknown = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        return [FieldError(_path([*parent, name]), "unknown field") for name in unknown]
    if error.validator == "required":
        missing = [name for name in error.validator_value if name not in error.instance]
        return [FieldError(_path([*parent, name]), "is required") for name in missing]
    if error.validator == "pattern":
        message = f"{clip(error.instance)} does not match the allowed pattern (see kubectl explain)"
    else:
        # jsonschema quotes the whole value (repr); a 50 MB one must not come back whole.
        message = error.message.replace(repr(error.instance), clip(error.instance))
    return [FieldError(_path(parent), message)]


def validate(document: Any, old: Any = None) -> Resource:
    """The typed resource, with defaults applied; ValidationFailed lists every error."""
    resource, errors = parse(document, old)
    if errors:
        raise ValidationFailed("; ".join(str(e) for e in errors))
    return resource


def parse(document: Any, old: Any = None) -> tuple[Resource | None, list[FieldError]]:
    """The typed resource and no errors, or None and every error: each document checked once."""
    errors, defaulted = _checked(document, old)
    if errors:
        return None, errors
    model = KINDS[defaulted["kind"]]
    try:
        return model.model_validate(defaulted), []
    except ValidationError as exc:
        # The schema and the model come from the same source, so this means a generator bug; the
        # errors still name their document and field.
        return None, [FieldError(_path(e["loc"]), e["msg"]) for e in exc.errors()]
