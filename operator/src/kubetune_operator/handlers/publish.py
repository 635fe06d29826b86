"""The end of every reconcile: the status patch, an Event per transition, and the metrics a phase
change moves (failures by reason; the kind's series of running work once it stops)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubetune_operator.handlers.kind import Kind
from kubetune_operator.runtime.context import Runtime
from kubetune_operator.runtime.events import post_event
from kubetune_operator.runtime.kube import CUSTOM_RESOURCES
from kubetune_operator.runtime.status import TERMINAL_PHASES, StatusDraft


async def publish(rt: Runtime, kind: Kind, body: Mapping[str, Any], draft: StatusDraft) -> None:
    patch = draft.finish()
    if patch is None:
        return
    meta = body["metadata"]
    written = await rt.api.patch(
        CUSTOM_RESOURCES[kind.plural], meta["namespace"], meta["name"], {"status": patch}, "status"
    )
    rt.own_writes.record((kind.plural, meta["namespace"], meta["name"]), written)
    for transition in draft.transitions():
        await post_event(rt.api, body, transition.type, transition.reason, transition.message)
    finished = draft.phase in TERMINAL_PHASES and not draft.was_terminal
    if finished and draft.phase == "Failed":
        failed = draft.get_condition("Failed") or {}
        rt.metrics.failures.labels(kind.singular, failed.get("reason", "Unknown")).inc()
    # A suspended (or Kueue-evicted) job makes no progress by design: its last progress time must
    # not raise the stall alert. Resumed, its first progress event brings the series back.
    if (finished or draft.phase == "Suspended") and kind.forget_running is not None:
        kind.forget_running(rt.metrics, meta["namespace"], meta["name"])
    if finished and kind.end_finished is not None:
        kind.end_finished(rt.metrics, meta["namespace"], meta["name"])
