"""What the generic reconcile loop needs to know about one kind; each kind's module builds its own."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from kubetune_operator.api import Resource
from kubetune_operator.observability.metrics import OperatorMetrics
from kubetune_operator.runtime.context import Runtime
from kubetune_operator.runtime.status import StatusDraft

# (runtime, typed resource, its body as read, the status draft) -> None; decides children and status.
Reconciler = Callable[[Runtime, Any, dict[str, Any], StatusDraft], Awaitable[None]]
# (metrics, namespace, name) -> None: removes per-resource series.
SeriesRemover = Callable[[OperatorMetrics, str, str], None]


@dataclass(frozen=True)
class Kind:
    model: type[Resource]
    reconcile: Reconciler
    # The per-resource series that describe running work: removed when the work finishes or is
    # suspended, so a job that stopped by design cannot look stalled.
    forget_running: SeriesRemover | None = None
    # Every per-resource series of the kind: removed when the resource is deleted.
    forget_all: SeriesRemover | None = None
    # The per-resource series about the finished work (an EvalRun's results): told when the work
    # ended, they stay a while for scrapes to record them, then go.
    end_finished: SeriesRemover | None = None

    @property
    def plural(self) -> str:
        return self.model.plural

    @property
    def singular(self) -> str:
        return self.model.singular
