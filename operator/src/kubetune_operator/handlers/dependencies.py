"""Inputs from other resources: whether one has succeeded (and what its status says), the artifacts
of those that have (the operator's lookup for the kinds' input resolvers, builders/inputs.py), and
which resources wait for which, so that a change of one wakes those that wait for it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf
from pydantic import ValidationError

from kubetune_operator.api import KINDS, Resource
from kubetune_operator.builders import graph
from kubetune_operator.builders.inputs import Artifacts
from kubetune_operator.runtime.context import Runtime
from kubetune_operator.runtime.kube import CUSTOM_RESOURCES
from kubetune_operator.runtime.status import StatusDraft


@dataclass(frozen=True)
class Dependency:
    ready: bool
    reason: str
    message: str
    status: dict[str, Any]
    failed: bool = False  # the input failed: waiting for it is waiting for a change by the user


async def dependency(rt: Runtime, model: type[Resource], namespace: str, name: str, label: str) -> Dependency:
    """Whether another kubetune resource has succeeded, with a reason and message saying why not."""
    kind = model.kind_name
    body = await rt.api.get(CUSTOM_RESOURCES[model.plural], namespace, name)
    if body is None:
        return Dependency(False, f"{label}NotFound", f"waiting for {kind} {name}: it does not exist in {namespace}", {})
    status = body.get("status") or {}
    phase = status.get("phase") or "Pending"
    if phase == "Succeeded":
        return Dependency(True, f"{label}Ready", f"{kind} {name} has succeeded", status)
    if phase == "Failed":
        why = status.get("message") or "no message"
        return Dependency(False, f"{label}Failed", f"{kind} {name} failed ({why}); fix it or point to another", status,
                          failed=True)
    return Dependency(False, f"{label}NotReady", f"waiting for {kind} {name} to succeed (it is {phase})", status)


@dataclass
class Inputs:
    """The inputs of one resource as checked so far: the artifacts of those that succeeded, read from
    their statuses, and those still blocking it."""

    ready: dict[tuple[type[Resource], str], Artifacts] = field(default_factory=dict)
    blocking: list[Dependency] = field(default_factory=list)

    async def check(self, rt: Runtime, model: type[Resource], namespace: str, name: str, label: str) -> Dependency:
        found = await dependency(rt, model, namespace, name, label)
        if found.ready:
            self.ready[(model, name)] = Artifacts.from_status(found.status)
        else:
            self.blocking.append(found)
        return found

    def artifacts_of(self, model: type[Resource], name: str) -> Artifacts | None:
        """The lookup for an input resolver: None for an input that has not succeeded (yet)."""
        return self.ready.get((model, name))


def wait(draft: StatusDraft, blocking: list[Dependency]) -> None:
    message = "; ".join(d.message for d in blocking)
    draft.set_phase("Waiting", message)
    failed = [d for d in blocking if d.failed]
    if failed:
        # A failed input never succeeds by itself: only a fixed or another input lets this go on.
        draft.stall(failed[0].reason, message)


def input_index(model: type[Resource], body: Mapping[str, Any]) -> dict[tuple[str, str, str], tuple[str, str]]:
    """For a kopf index: each resource this one waits for → this one, to wake it when they change."""
    try:
        resource = model.model_validate({k: v for k, v in body.items() if k != "status"})
    except ValidationError:
        return {}
    return {
        (KINDS[kind].plural, namespace, name): (model.plural, resource.metadata.name)
        for kind, namespace, name in graph.references(resource)
    }


def dependents_of(plural: str, namespace: str, name: str, *indexes: kopf.Index) -> list[tuple[str, str]]:
    """(plural, name) of the resources whose inputs include this one, from the input indexes."""
    found = []
    for index in indexes:
        for entry in index.get((plural, namespace, name), []):
            found.append(tuple(entry))
    return found
