"""Pydantic JSON Schema → Kubernetes structural OpenAPI v3 schema.

Kubernetes wants every node typed, no `$ref`, no `anyOf` around nullable fields, draft-4 style
`exclusiveMinimum`, no `propertyNames`, and `default: {}` on parent objects so that nested
defaults apply. This module rewrites pydantic's output into that shape; nothing else edits schemas.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from pydantic import BaseModel

# Keys that carry no meaning for the API server.
_DROP = {"title", "$defs", "discriminator", "examples"}


class NotStructural(ValueError):
    """The model uses a construct that Kubernetes structural schemas cannot express."""


def _key_rule(names: dict[str, Any]) -> dict[str, str]:
    """CEL for map keys: Kubernetes has no propertyNames, so key patterns become a rule."""
    clauses = []
    if "pattern" in names:
        pattern = names["pattern"].replace("\\", "\\\\").replace("'", "\\'")
        clauses.append(f"k.matches('{pattern}')")
    if "maxLength" in names:
        clauses.append(f"size(k) <= {names['maxLength']}")
    return {"rule": f"self.all(k, {' && '.join(clauses)})", "message": "invalid map key"}


def _fractional_bounds_as_rules(node: dict[str, Any]) -> None:
    """A `number` bound that is not a whole number becomes a CEL rule. kube-apiserver checks a
    value written as an integer (`0`, and a default of `0.0`, which JSON writes `0`) against the
    bound truncated to an integer: `< 0.5` refused 0 (the CRD itself, for its default) and
    `>= 0.5` let 0 through. CEL compares a `number` field as a double."""
    if node.get("type") != "number":
        return
    for key, strict, loose in (("minimum", ">", ">="), ("maximum", "<", "<=")):
        bound = node.get(key)
        if isinstance(bound, float) and not bound.is_integer():
            exclusive = node.pop(f"exclusive{key[:3].capitalize()}imum", False)
            node.pop(key)
            op = strict if exclusive else loose
            node.setdefault("x-kubernetes-validations", []).append(
                {"rule": f"self {op} {bound!r}", "message": f"must be {op} {bound!r}"})


def unwrap(text: str) -> str:
    """A docstring's lines joined into paragraphs: `kubectl explain` wraps descriptions itself and
    would keep the source's line breaks mid-sentence."""
    paragraphs = re.split(r"\n\s*\n", text.strip())
    return "\n\n".join(" ".join(line.strip() for line in p.splitlines()) for p in paragraphs)


def prune_nulls(value: Any) -> Any:
    """A copy without null fields: the API server drops nulls of non-nullable fields before defaulting."""
    if isinstance(value, dict):
        return {k: prune_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [prune_nulls(v) for v in value]
    return value


def _convert(node: Any, defs: dict[str, Any], path: str) -> Any:
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:
        name = node.pop("$ref").rsplit("/", 1)[-1]
        target = copy.deepcopy(defs[name])
        # The field's own description and default win over the referenced model's.
        target.update(node)
        node = target
    if "anyOf" in node:
        options = [o for o in node.pop("anyOf") if o.get("type") != "null"]
        if len(options) != 1:
            raise NotStructural(f"{path}: unions are not structural; use one type per field")
        inner = copy.deepcopy(options[0])
        if "$ref" in inner:
            inner = _convert(inner, defs, path)
        outer_rules = node.pop("x-kubernetes-validations", [])
        inner.update({k: v for k, v in node.items() if k != "default" or v is not None})
        if outer_rules:
            inner["x-kubernetes-validations"] = inner.get("x-kubernetes-validations", []) + outer_rules
        node = inner
    if node.get("default", "absent") is None:
        node.pop("default")
    if isinstance(node.get("description"), str):
        node["description"] = unwrap(node["description"])
    for key in _DROP:
        node.pop(key, None)
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if "exclusiveMinimum" in node and not isinstance(node["exclusiveMinimum"], bool):
        node["minimum"] = node.pop("exclusiveMinimum")
        node["exclusiveMinimum"] = True
    if "exclusiveMaximum" in node and not isinstance(node["exclusiveMaximum"], bool):
        node["maximum"] = node.pop("exclusiveMaximum")
        node["exclusiveMaximum"] = True
    _fractional_bounds_as_rules(node)
    key_constraints = dict(node.pop("propertyNames", {}))
    if "patternProperties" in node:
        patterns = node.pop("patternProperties")
        if len(patterns) != 1:
            raise NotStructural(f"{path}: a map needs exactly one key pattern")
        (pattern, value_schema), = patterns.items()
        key_constraints["pattern"] = pattern
        node["additionalProperties"] = value_schema
    if key_constraints:
        rules = node.setdefault("x-kubernetes-validations", [])
        rules.append(_key_rule(key_constraints))
    if "default" in node:
        node["default"] = prune_nulls(node["default"])
    if "enum" in node and "type" not in node:
        sample = node["enum"][0]
        node["type"] = "integer" if isinstance(sample, int) and not isinstance(sample, bool) else "string"
    if "type" not in node:
        raise NotStructural(f"{path}: every schema node needs a type")
    if node["type"] == "object":
        if "properties" in node:
            node["properties"] = {
                name: _convert(child, defs, f"{path}.{name}") for name, child in node["properties"].items()
            }
            node.pop("additionalProperties", None)
            if "default" in node:
                # The object with its fields' own defaults, generated here from the same schema (so
                # it cannot drift): kube-apiserver evaluates the object's CEL rules on the default
                # as written, and `default: {}` fails every rule that reads a defaulted field.
                node["default"] = filled_default(node)
        elif isinstance(node.get("additionalProperties"), dict):
            node["additionalProperties"] = _convert(node["additionalProperties"], defs, f"{path}[*]")
        elif node.get("additionalProperties") is True:
            # A Kubernetes object kept as written (an affinity): the API server checks it when the pod is made.
            node.pop("additionalProperties")
            node["x-kubernetes-preserve-unknown-fields"] = True
    if node["type"] == "array" and "items" in node:
        node["items"] = _convert(node["items"], defs, f"{path}[*]")
    if "required" in node and not node["required"]:
        node.pop("required")
    return node


def filled_default(node: dict[str, Any]) -> dict[str, Any]:
    """What the API server makes of `{}` for an object node: each field with a default, recursively."""
    filled = {}
    for name, child in node.get("properties", {}).items():
        if "default" in child:
            filled[name] = filled_default(child) if child.get("type") == "object" and "properties" in child \
                else copy.deepcopy(child["default"])
    return filled


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.get("$defs", {})
    return _convert(raw, defs, model.__name__)


def walk(schema: dict[str, Any], path: str = ""):
    """Yield (path, node) for every node of a converted schema."""
    yield path, schema
    for name, child in schema.get("properties", {}).items():
        yield from walk(child, f"{path}.{name}" if path else name)
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}[*]")
    if "items" in schema:
        yield from walk(schema["items"], f"{path}[*]")
