"""Every metric the operator exposes on :9090/metrics (docs/contracts.md §8).

The names are part of the dashboards' and alerts' contract: `charts/kubetune/dashboards/*.json`
and the chart's PrometheusRule query them, and a test checks every name they use is defined
here or in the trainer's `TrainerMetrics`.

The operator exports what only it knows: reconciles, phases, failures, when a job last reported
progress, and an EvalRun's results (they reach it in the eval pod's termination message, after
the pod's own series have ended). What pods measure (loss, steps, tokens, GPU memory) comes from
the pods alone (`kubetune_trainer_*`, `kubetune_eval_*`), never twice.

Per-resource series carry `namespace` and `resource` labels, as pod series do once the PodMonitor
copied the pod label `kubetune.dev/resource`. Their number is bounded by the work under way: the
progress timestamp is removed when the training finishes, is suspended or is deleted; an EvalRun's
results are kept for `FINISHED_SERIES_SECONDS` after it ends (long enough for scrapes to record
them; dashboards read them back with `last_over_time`) and then removed.

    from kubetune_operator.observability.metrics import operator_metrics

    m = operator_metrics()
    with m.time_reconcile("finetunejob"):
        ...
    m.record_progress("team-a", "dpo")    # a progress event arrived (contracts §4)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

# Reconciles are API round trips (fast) or builder renders plus a few creates (slower);
# anything beyond a minute is a stuck handler, which the top bucket makes visible.
RECONCILE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

RESOURCE_LABELS = ("namespace", "resource")
# How long an EvalRun's results stay exported after it ended: several scrape intervals.
FINISHED_SERIES_SECONDS = 600.0


class OperatorMetrics:
    """The operator's metrics, registered on `registry` (the process-wide default unless given)."""

    def __init__(self, registry: CollectorRegistry = REGISTRY):
        self.reconciles = Counter(
            "kubetune_operator_reconciles",
            "Reconciles handled, by kind and result (success or error)",
            ["kind", "result"],
            registry=registry,
        )
        self.reconcile_duration = Histogram(
            "kubetune_operator_reconcile_duration_seconds",
            "Time spent in one reconcile, by kind",
            ["kind"],
            buckets=RECONCILE_BUCKETS,
            registry=registry,
        )
        self.resources = Gauge(
            "kubetune_resources", "Resources by kind and status phase", ["kind", "phase"], registry=registry
        )
        self.failures = Counter(
            "kubetune_resource_failures",
            "Resources that reached the Failed phase, by kind and exit reason",
            ["kind", "reason"],
            registry=registry,
        )
        self.training_last_progress = Gauge(
            "kubetune_training_last_progress_timestamp_seconds",
            "Unix time of the latest progress event of a running training; the stall alert watches it",
            RESOURCE_LABELS,
            registry=registry,
        )
        self.eval_metric = Gauge(
            "kubetune_eval_metric",
            "Score of an EvalRun candidate on one metric, exported for a while after the EvalRun ended",
            [*RESOURCE_LABELS, "candidate", "metric"],
            registry=registry,
        )
        self.eval_gates_failed = Gauge(
            "kubetune_eval_gates_failed",
            "Gates an EvalRun failed, exported for a while after the EvalRun ended",
            RESOURCE_LABELS,
            registry=registry,
        )
        self._phases_seen: dict[str, set[str]] = {}
        self._phases_lock = threading.Lock()
        # (namespace, resource) -> when its eval series go
        self._eval_ends: dict[tuple[str, str], float] = {}
        self._eval_lock = threading.Lock()

    @contextmanager
    def time_reconcile(self, kind: str) -> Iterator[None]:
        """Count and time one reconcile; an exception counts as an error and propagates.

        A cancelled reconcile (the operator shutting down) is neither: it propagates uncounted.
        """
        started = time.perf_counter()
        try:
            yield
        except Exception:
            self.reconciles.labels(kind, "error").inc()
            raise
        else:
            self.reconciles.labels(kind, "success").inc()
        finally:
            self.reconcile_duration.labels(kind).observe(time.perf_counter() - started)

    def set_phase_counts(self, kind: str, counts: Mapping[str, int]) -> None:
        """Publish how many resources of `kind` are in each phase.

        A phase that had resources before and has none now is set to 0 rather than left at its
        old count, so a sum over phases is always the number of resources.
        """
        with self._phases_lock:
            seen = self._phases_seen.setdefault(kind, set())
            seen.update(counts)
            for phase in seen:
                self.resources.labels(kind, phase).set(counts.get(phase, 0))

    def record_progress(self, namespace: str, resource: str, received_at: float | None = None) -> None:
        """A progress event (contracts §4) arrived: pods send them from the training loop only, so
        every event counts as progress."""
        self.training_last_progress.labels(namespace, resource).set(time.time() if received_at is None else received_at)

    def record_eval(
        self,
        namespace: str,
        resource: str,
        metrics: Mapping[str, Mapping[str, Any]],
        gates_failed: int,
        ended_at: float | None = None,
    ) -> None:
        """Publish an EvalRun's results, shaped as the eval termination summary's `metrics` (contracts §5),
        until `FINISHED_SERIES_SECONDS` after `ended_at` (when given; else until `end_eval`).

        A score is either a number or `{"value": x, ...}`; entries with no numeric value are skipped.
        """
        self.eval_metric.remove_by_labels({"namespace": namespace, "resource": resource})
        for candidate, scores in metrics.items():
            for metric, score in scores.items():
                value = score.get("value") if isinstance(score, Mapping) else score
                if _is_number(value):
                    self.eval_metric.labels(namespace, resource, candidate, metric).set(value)
        self.eval_gates_failed.labels(namespace, resource).set(gates_failed)
        if ended_at is not None:
            self.end_eval(namespace, resource, ended_at)
        else:
            # Running still (a promotion): the end comes with the phase that ends it.
            with self._eval_lock:
                self._eval_ends.pop((namespace, resource), None)

    def end_eval(self, namespace: str, resource: str, ended_at: float) -> None:
        """The EvalRun ended at `ended_at`: its series go `FINISHED_SERIES_SECONDS` later."""
        with self._eval_lock:
            self._eval_ends[(namespace, resource)] = ended_at + FINISHED_SERIES_SECONDS

    def end_eval_now(self, namespace: str, resource: str) -> None:
        self.end_eval(namespace, resource, time.time())

    def drop_ended(self, now: float | None = None) -> None:
        """Remove the series of EvalRuns that ended more than `FINISHED_SERIES_SECONDS` ago."""
        now = time.time() if now is None else now
        with self._eval_lock:
            due = [key for key, at in self._eval_ends.items() if at <= now]
            for key in due:
                del self._eval_ends[key]
        for namespace, resource in due:
            self.forget_eval(namespace, resource)

    def forget_training(self, namespace: str, resource: str) -> None:
        """Drop the training's progress timestamp (it finished or is suspended: no progress is due)."""
        self.training_last_progress.remove_by_labels({"namespace": namespace, "resource": resource})

    def forget_eval(self, namespace: str, resource: str) -> None:
        """Drop the EvalRun's results."""
        self.eval_metric.remove_by_labels({"namespace": namespace, "resource": resource})
        self.eval_gates_failed.remove_by_labels({"namespace": namespace, "resource": resource})
        with self._eval_lock:
            self._eval_ends.pop((namespace, resource), None)

    def forget(self, namespace: str, resource: str) -> None:
        """Drop every series of the resource (when it is deleted)."""
        self.forget_training(namespace, resource)
        self.forget_eval(namespace, resource)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_metrics: OperatorMetrics | None = None
_metrics_lock = threading.Lock()


def operator_metrics() -> OperatorMetrics:
    """The process-wide instance on the default registry (created on first use)."""
    global _metrics
    with _metrics_lock:
        if _metrics is None:
            _metrics = OperatorMetrics()
        return _metrics
