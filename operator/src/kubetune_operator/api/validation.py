"""Validate resource documents the way the API server does, with no API server.

Order as in kube-apiserver: defaults from the schema, then the structural schema (with unknown
fields rejected, as `kubectl apply`'s strict field validation does), then the CEL rules
(`x-kubernetes-validations`, transition rules only on update). Every error names its field path.
`kubetune run`, `kubetune render` and the tests use this; the cluster uses the same CRDs.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from functools import cache
from typing import Any

import celpy
import jsonschema
from pydantic import ValidationError

from kubetune_operator.api import API_VERSION, KINDS, Resource
from kubetune_operator.api.crd import openapi_schema
from kubetune_operator.api.resource import MAX_NAMESPACE_LENGTH, NAMESPACE_PATTERN
from kubetune_operator.api.schema import prune_nulls
from kubetune_operator.errors import ValidationFailed, clip

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
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
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


@cache
def _validator(kind: str) -> jsonschema.Draft4Validator:
    schema = _strict(_schema(kind))
    schema["properties"]["metadata"] = {"type": "object"}
    schema["properties"].pop("status", None)
    return jsonschema.Draft4Validator(schema)


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


def _evaluate(rule: str, value: Any, old: Any) -> bool | str:
    activation = {"self": celpy.json_to_cel(value)}
    if old is not None:
        activation["oldSelf"] = celpy.json_to_cel(old)
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
    if not isinstance(document, dict):
        return [FieldError("", "a resource document must be a mapping")]
    if document.get("apiVersion") != API_VERSION:
        return [FieldError("apiVersion", f"must be {API_VERSION} (got {document.get('apiVersion')!r})")]
    kind = document.get("kind")
    if kind not in KINDS:
        return [FieldError("kind", f"must be one of {', '.join(KINDS)} (got {kind!r})")]
    metadata = document.get("metadata")
    if not isinstance(metadata, dict) or not isinstance(metadata.get("name"), str):
        return [FieldError("metadata.name", "is required")]
    if not DNS_SUBDOMAIN.match(metadata["name"]) or len(metadata["name"]) > 253:
        return [
            FieldError(
                "metadata.name",
                "must be lowercase letters, digits, '-' and '.', starting and ending with a letter or digit",
            )
        ]
    namespace = metadata.get("namespace")
    if namespace is not None and (
        not isinstance(namespace, str) or not DNS_LABEL.match(namespace) or len(namespace) > MAX_NAMESPACE_LENGTH
    ):
        return [
            FieldError(
                "metadata.namespace",
                f"must be a DNS-1123 label: at most {MAX_NAMESPACE_LENGTH} lowercase letters, digits and '-', "
                f"starting and ending with a letter or digit (got {clip(namespace)})",
            )
        ]
    schema = _schema(kind)
    document = apply_defaults(schema, prune_nulls(document))
    body = {k: v for k, v in document.items() if k != "status"}
    errors = [
        field_error
        for error in sorted(_validator(kind).iter_errors(body), key=lambda e: list(map(str, e.absolute_path)))
        for field_error in _schema_errors(error)
    ]
    if errors:
        return errors
    if old is not None:
        old = _as_cel_types(schema, apply_defaults(schema, prune_nulls(old)))
    return _cel_errors({**schema, "properties": {k: v for k, v in schema["properties"].items() if k != "status"}},
                       _as_cel_types(schema, body), old, [])


def _schema_errors(error: jsonschema.ValidationError) -> list[FieldError]:
    parent = list(error.absolute_path)
    if error.validator == "additionalProperties":
        unknown = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        return [FieldError(_path([*parent, name]), "unknown field") for name in unknown]
    if error.validator == "required":
        missing = [name for name in error.validator_value if name not in error.instance]
        return [FieldError(_path([*parent, name]), "is required") for name in missing]
    if error.validator == "pattern":
        message = f"{error.instance!r} does not match the allowed pattern (see kubectl explain)"
    else:
        message = error.message
    return [FieldError(_path(parent), message)]


def validate(document: Any, old: Any = None) -> Resource:
    """The typed resource, with defaults applied; ValidationFailed lists every error."""
    errors = check(document, old)
    if errors:
        raise ValidationFailed("; ".join(str(e) for e in errors))
    model = KINDS[document["kind"]]
    try:
        return model.model_validate(apply_defaults(_schema(document["kind"]), prune_nulls(document)))
    except ValidationError as exc:
        # The schema and the model come from the same source, so this means a generator bug.
        raise ValidationFailed(
            "; ".join(f"{_path(e['loc'])}: {e['msg']}" for e in exc.errors())
        ) from exc
