"""The reconcile loop, the same for every kind: it names none. A kind's module registers a `Kind`
(its model, its reconciler, its metrics) and the loop does the rest.

A reconcile is level-based: it reads the resource and its children from the API server, decides,
creates what is missing (a 409 means another reconcile got there first, and its object is used),
and patches the status with the difference. Nothing it needs lives only in memory, so after an
operator restart at any point the next reconcile finds the one Job that exists and carries on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from kubetune_operator.api import Resource
from kubetune_operator.handlers.kind import Kind
from kubetune_operator.handlers.publish import publish
from kubetune_operator.runtime.context import Runtime
from kubetune_operator.runtime.kube import CUSTOM_RESOURCES, ResourceKey
from kubetune_operator.runtime.status import StatusDraft

# Every registered kind, by plural (watch.register fills it).
REGISTERED: dict[str, Kind] = {}


async def reconcile(rt: Runtime, plural: str, namespace: str, name: str) -> None:
    """Bring one resource's children and status up to date (serialised per resource)."""
    kind = REGISTERED[plural]
    rt.metrics.drop_ended()
    async with rt.locks.hold((plural, namespace, name)):
        with rt.metrics.time_reconcile(kind.singular):
            body = await rt.api.get(CUSTOM_RESOURCES[plural], namespace, name)
            if body is None or body["metadata"].get("deletionTimestamp"):
                return
            draft = StatusDraft(body.get("status"), body["metadata"].get("generation"))
            resource = parse(kind.model, body, draft)
            if resource is not None:
                await kind.reconcile(rt, resource, body, draft)
            await publish(rt, kind, body, draft)


def parse(model: type[Resource], body: Mapping[str, Any], draft: StatusDraft) -> Resource | None:
    """The typed resource; a spec the model refuses fails the resource, naming every bad field.

    The API server validated it against the CRD already; this catches a CRD older than the operator.
    A resource that finished under an older API keeps its outcome.
    """
    try:
        return model.model_validate({k: v for k, v in body.items() if k != "status"})
    except ValidationError as exc:
        if not draft.was_terminal:
            problems = "; ".join(f"{_location(e['loc'])}: {e['msg']}" for e in exc.errors())
            draft.fail("InvalidSpec", f"the spec does not match this operator's API: {problems}")
        return None


def _location(parts: Iterable[Any]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


async def handle_event(
    rt: Runtime, plural: str, event: Mapping[str, Any], dependents: Iterable[tuple[str, str]]
) -> None:
    """A watch event of a kubetune resource: keep the phase book, reconcile, wake what waits on it."""
    body = event["object"]
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    key: ResourceKey = (plural, namespace, name)
    kind = REGISTERED[plural]
    if event.get("type") == "DELETED":
        rt.phases.forget(key)
        rt.own_writes.forget(key)
        rt.metrics.set_phase_counts(kind.singular, rt.phases.counts(plural))
        rt.progress.forget(key)
        # Series are labelled by namespace and name only, so only this kind's go: a FineTuneJob and
        # an EvalRun may share the name of a dataset.
        if kind.forget_all is not None:
            kind.forget_all(rt.metrics, namespace, name)
        return
    changed = rt.phases.observe(key, (body.get("status") or {}).get("phase"))
    if changed:
        rt.metrics.set_phase_counts(kind.singular, rt.phases.counts(plural))
    if not rt.own_writes.is_echo(key, body):
        await reconcile(rt, plural, namespace, name)
    if changed:
        for dependent_plural, dependent in sorted(set(dependents)):
            await reconcile(rt, dependent_plural, namespace, dependent)
