"""Every metric the operator exposes on :9090/metrics (docs/contracts.md §8).

The names are part of the dashboards' and alerts' contract: `charts/kubetune/dashboards/*.json`
and the chart's PrometheusRule query them, and a test checks every name they use is defined
here or in the trainer's `TrainerMetrics`.

Per-resource series carry `namespace` and `name` labels, so their number grows with the number
of resources. They are removed when they stop meaning anything: training series when the
resource finishes (`forget_training`), everything when it is deleted (`forget`). Eval results
are only known once an EvalRun finishes, so they stay until the EvalRun is deleted.

    from kubetune_operator.observability.metrics import operator_metrics

    m = operator_metrics()
    with m.time_reconcile("finetunejob"):
        ...
    m.record_progress("team-a", "dpo", event)    # a progress event (contracts §4)
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

RESOURCE_LABELS = ("namespace", "name")


class OperatorMetrics:
    """The operator's metrics, registered on `registry` (the process-wide default unless given)."""

    def __init__(self, registry: CollectorRegistry = REGISTRY):
        def per_resource(name: str, documentation: str) -> Gauge:
            return Gauge(name, documentation, RESOURCE_LABELS, registry=registry)

        self.reconciles = Counter(
            "kubetune_operator_reconciles",
            "Reconciles handled, by kind and result (success or error)",
            ["kind", "result"],
            registry=registry,
        )
        self.reconcile_errors = Counter(
            "kubetune_operator_reconcile_errors",
            "Reconciles that raised, by kind",
            ["kind"],
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
        self.training_progress = per_resource("kubetune_training_progress_ratio", "Fraction of the work done, 0..1")
        self.training_loss = per_resource("kubetune_training_loss", "Latest training loss reported")
        self.training_reward_margin = per_resource(
            "kubetune_training_reward_margin", "Latest DPO reward margin (chosen - rejected) reported"
        )
        self.training_tokens_per_second = per_resource(
            "kubetune_training_tokens_per_second", "Training tokens per second, all pods of the job"
        )
        self.training_eta = per_resource("kubetune_training_eta_seconds", "Estimated seconds until the work is done")
        self.training_last_progress = per_resource(
            "kubetune_training_last_progress_timestamp_seconds",
            "Unix time of the latest progress event received; the stall alert watches it",
        )
        self.eval_metric = Gauge(
            "kubetune_eval_metric",
            "Score of an EvalRun candidate on one metric",
            [*RESOURCE_LABELS, "candidate", "metric"],
            registry=registry,
        )
        self.eval_gates_failed = per_resource("kubetune_eval_gates_failed", "Gates an EvalRun failed")
        self._training = (
            self.training_progress,
            self.training_loss,
            self.training_reward_margin,
            self.training_tokens_per_second,
            self.training_eta,
            self.training_last_progress,
        )
        self._phases_seen: dict[str, set[str]] = {}
        self._phases_lock = threading.Lock()

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
            self.reconcile_errors.labels(kind).inc()
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

    def record_progress(
        self, namespace: str, name: str, event: Mapping[str, Any], received_at: float | None = None
    ) -> None:
        """Fold one progress event (contracts §4) into the per-resource gauges.

        Every event counts as progress: pods send them from the training loop only.
        """
        for key, gauge in (
            ("loss", self.training_loss),
            ("reward_margin", self.training_reward_margin),
            ("tokens_per_second", self.training_tokens_per_second),
            ("eta_seconds", self.training_eta),
        ):
            value = event.get(key)
            if _is_number(value):
                gauge.labels(namespace, name).set(value)
        percent = event.get("percent")
        if _is_number(percent):
            self.training_progress.labels(namespace, name).set(percent / 100.0)
        self.training_last_progress.labels(namespace, name).set(time.time() if received_at is None else received_at)

    def record_eval(
        self,
        namespace: str,
        name: str,
        metrics: Mapping[str, Mapping[str, Any]],
        gates_failed: int,
    ) -> None:
        """Publish an EvalRun's results, shaped as the eval termination summary's `metrics` (contracts §5).

        A score is either a number or `{"value": x, ...}`; entries with no numeric value are skipped.
        """
        self.eval_metric.remove_by_labels({"namespace": namespace, "name": name})
        for candidate, scores in metrics.items():
            for metric, score in scores.items():
                value = score.get("value") if isinstance(score, Mapping) else score
                if _is_number(value):
                    self.eval_metric.labels(namespace, name, candidate, metric).set(value)
        self.eval_gates_failed.labels(namespace, name).set(gates_failed)

    def forget_training(self, namespace: str, name: str) -> None:
        """Drop the resource's training series (when it finishes: nothing will update them)."""
        for gauge in self._training:
            gauge.remove_by_labels({"namespace": namespace, "name": name})

    def forget_eval(self, namespace: str, name: str) -> None:
        """Drop the resource's eval results (when it is deleted: they describe it until then)."""
        self.eval_metric.remove_by_labels({"namespace": namespace, "name": name})
        self.eval_gates_failed.remove_by_labels({"namespace": namespace, "name": name})

    def forget(self, namespace: str, name: str) -> None:
        """Drop every series of the resource (when it is deleted)."""
        self.forget_training(namespace, name)
        self.forget_eval(namespace, name)


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
