"""What kopf calls: each registered kind's watch events and input index, the child Jobs' events, and
the periodic resync."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from kubetune_operator.api.resource import GROUP, VERSION
from kubetune_operator.handlers.dependencies import dependents_of, input_index
from kubetune_operator.handlers.kind import Kind
from kubetune_operator.handlers.reconcile import REGISTERED, handle_event, reconcile
from kubetune_operator.runtime.context import Runtime
from kubetune_operator.runtime.kube import JOBS

log = logging.getLogger(__name__)

# kopf passes every index to every handler as a keyword argument named by its id.
INPUT_INDEXES: list[str] = []


def register(kind: Kind) -> None:
    """Reconcile `kind` with its description, watch it, and index what its resources wait for."""
    plural = kind.plural
    REGISTERED[plural] = kind
    index_id = f"{kind.singular}_inputs"
    INPUT_INDEXES.append(index_id)

    @kopf.index(GROUP, VERSION, plural, id=index_id)
    def inputs(body: kopf.Body, **_) -> dict[tuple[str, str, str], tuple[str, str]]:
        return input_index(kind.model, body)

    @kopf.on.event(GROUP, VERSION, plural, id=f"{kind.singular}-event")
    async def changed(event: dict[str, Any], memo: kopf.Memo, **kwargs: Any) -> None:
        meta = event["object"]["metadata"]
        indexes = [kwargs[index] for index in INPUT_INDEXES]
        dependents = dependents_of(plural, meta["namespace"], meta["name"], *indexes)
        await handle_event(memo.runtime, plural, event, dependents)


@kopf.on.event("batch", "v1", "jobs", labels={"app.kubernetes.io/managed-by": "kubetune"})
async def job_changed(event: dict[str, Any], body: kopf.Body, memo: kopf.Memo, **_) -> None:
    """Any change of a child Job, except the operator's own writes, is a reason to look at its
    resource again."""
    rt: Runtime = memo.runtime
    key = (JOBS.plural, body.metadata.namespace, body.metadata.name)
    if event.get("type") == "DELETED":
        rt.own_writes.forget(key)
    elif rt.own_writes.is_echo(key, body):
        return
    labels = body.metadata.labels
    singular = labels.get("kubetune.dev/kind", "")
    plural = next((kind.plural for kind in REGISTERED.values() if kind.singular == singular), None)
    name = labels.get("kubetune.dev/resource")
    if plural is not None and name:
        await reconcile(rt, plural, body.metadata.namespace, name)


@kopf.on.startup()
async def start_resync(memo: kopf.Memo, **_) -> None:
    memo.resync = asyncio.create_task(resync(memo))


@kopf.on.cleanup()
async def stop_resync(memo: kopf.Memo, **_) -> None:
    task = getattr(memo, "resync", None)
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def resync(memo: kopf.Memo) -> None:
    """Reconcile every unfinished resource now and then: a reconcile that failed (API error, a
    crash of an event handler) is retried here, since watch events are not replayed."""
    while True:
        rt: Runtime = memo.runtime
        await asyncio.sleep(rt.settings.resync_interval)
        # Finished EvalRuns' series end here too when nothing else is reconciled.
        rt.metrics.drop_ended()
        for plural, namespace, name in list(rt.phases.unfinished()):
            try:
                await reconcile(rt, plural, namespace, name)
            except Exception:
                log.exception("resync of %s %s/%s failed; the next round retries", plural, namespace, name)
