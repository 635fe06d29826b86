"""The operator's requests (recorded by the emulator) against the chart's RBAC for it: every call
the operator makes in a namespace must be one the chart's operator Role grants there."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import yaml

HELPERS = Path(__file__).resolve().parents[3] / "charts" / "kubetune" / "templates" / "_helpers.tpl"
Permission = tuple[str, str, str]  # (API group, resource[/subresource], verb)


def chart_operator_rules() -> set[Permission]:
    """The rules of `kubetune.operatorRules`, which the chart puts into the operator's Role in each
    watched namespace (and into its ClusterRole, with namespace and CRD discovery, in cluster mode)."""
    text = HELPERS.read_text()
    body = text.split('{{- define "kubetune.operatorRules" -}}', 1)[1].split("{{- end }}", 1)[0]
    return {
        (group, resource, verb)
        for rule in yaml.safe_load(body)
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def permission(method: str, path: str, watch: bool) -> Permission | None:
    """What a request needs from RBAC; None for API discovery, which every client may read."""
    parts = path.strip("/").split("/")
    if parts[0] == "api":
        group, rest = "", parts[2:]
    elif parts[0] == "apis" and len(parts) >= 3:
        group, rest = parts[1], parts[3:]
    else:
        return None
    if len(rest) >= 3 and rest[0] == "namespaces":
        rest = rest[2:]
    if not rest:
        return None
    resource = "/".join([rest[0], *rest[2:3]])
    named = len(rest) > 1
    verb = {"GET": "watch" if watch else ("get" if named else "list"), "POST": "create", "PATCH": "patch",
            "PUT": "update", "DELETE": "delete" if named else "deletecollection"}[method]
    return group, resource, verb


def refused_by_chart(requests: Iterable[tuple[str, str, bool]]) -> list[str]:
    """The requests the chart's operator Role would refuse, as `METHOD path (group resource verb)`."""
    allowed = chart_operator_rules()
    refused = []
    for method, path, watch in requests:
        needed = permission(method, path, watch)
        if needed is not None and needed not in allowed:
            refused.append(f"{method} {path}{' (watch)' if watch else ''}: needs {needed}")
    return sorted(set(refused))
