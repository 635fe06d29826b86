"""The operator's metrics: names from contracts §8 and the helpers the handlers call."""

import asyncio

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from kubetune_operator.observability.metrics import FINISHED_SERIES_SECONDS, OperatorMetrics, operator_metrics

CONTRACT_NAMES = {
    "kubetune_operator_reconciles_total",
    "kubetune_operator_reconcile_duration_seconds_bucket",
    "kubetune_resources",
    "kubetune_resource_failures_total",
    "kubetune_training_last_progress_timestamp_seconds",
    "kubetune_eval_metric",
    "kubetune_eval_gates_failed",
}
# What pods measure is exported by the pods alone (kubetune_trainer_*): never a second time here.
POD_MEASUREMENTS = {"loss", "reward_margin", "tokens_per_second", "eta_seconds", "progress_ratio"}


@pytest.fixture
def registry():
    return CollectorRegistry()


@pytest.fixture
def metrics(registry):
    return OperatorMetrics(registry)


def samples(registry, name):
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name == name
    }


def exposed(registry) -> set[str]:
    return {line.split("{")[0].split(" ")[0] for line in generate_latest(registry).decode().splitlines()
            if not line.startswith("#")}


def test_every_contract_name_is_exposed_and_nothing_twice(metrics, registry):
    with metrics.time_reconcile("finetunejob"):
        pass
    metrics.set_phase_counts("finetunejob", {"Running": 1})
    metrics.failures.labels("finetunejob", "OutOfMemory").inc()
    metrics.record_progress("ns", "job")
    metrics.record_eval("ns", "eval", {"tuned": {"exact_match": 0.5}}, gates_failed=0)
    names = exposed(registry)
    assert CONTRACT_NAMES <= names
    assert not {n for n in names if any(n.endswith(m) for m in POD_MEASUREMENTS)}
    # Errors are reconciles_total{result="error"}; no second counter repeats them.
    assert not {n for n in names if "error" in n}


def test_a_reconcile_that_raises_counts_as_an_error_and_propagates(metrics, registry):
    with pytest.raises(RuntimeError), metrics.time_reconcile("evalrun"):
        raise RuntimeError("API went away")
    with metrics.time_reconcile("evalrun"):
        pass
    assert samples(registry, "kubetune_operator_reconciles_total") == {
        (("kind", "evalrun"), ("result", "error")): 1.0,
        (("kind", "evalrun"), ("result", "success")): 1.0,
    }
    assert samples(registry, "kubetune_operator_reconcile_duration_seconds_count") == {(("kind", "evalrun"),): 2.0}


def test_a_reconcile_cancelled_at_shutdown_is_no_error(metrics, registry):
    with pytest.raises(asyncio.CancelledError), metrics.time_reconcile("evalrun"):
        raise asyncio.CancelledError
    assert samples(registry, "kubetune_operator_reconciles_total") == {}


def test_a_phase_left_empty_drops_to_zero(metrics, registry):
    metrics.set_phase_counts("finetunejob", {"Running": 2, "Pending": 1})
    metrics.set_phase_counts("finetunejob", {"Succeeded": 3})
    assert samples(registry, "kubetune_resources") == {
        (("kind", "finetunejob"), ("phase", "Running")): 0.0,
        (("kind", "finetunejob"), ("phase", "Pending")): 0.0,
        (("kind", "finetunejob"), ("phase", "Succeeded")): 3.0,
    }


def test_a_progress_event_stamps_the_time_under_the_resource_label(metrics, registry):
    metrics.record_progress("team-a", "dpo", received_at=1_700_000_000.0)
    assert samples(registry, "kubetune_training_last_progress_timestamp_seconds") == {
        (("namespace", "team-a"), ("resource", "dpo")): 1_700_000_000.0}


def test_eval_results_replace_the_previous_ones(metrics, registry):
    summary_metrics = {
        "base": {"exact_match": {"value": 0.4, "ciLow": 0.3, "ciHigh": 0.5}},
        "dpo": {"exact_match": {"value": 0.7}, "repetition": 0.02, "broken": {"ciLow": 1}},
    }
    metrics.record_eval("team-a", "gate", {"old": {"exact_match": 0.1}}, gates_failed=0)
    metrics.record_eval("team-a", "gate", summary_metrics, gates_failed=1)
    assert samples(registry, "kubetune_eval_metric") == {
        (("candidate", "base"), ("metric", "exact_match"), ("namespace", "team-a"), ("resource", "gate")): 0.4,
        (("candidate", "dpo"), ("metric", "exact_match"), ("namespace", "team-a"), ("resource", "gate")): 0.7,
        (("candidate", "dpo"), ("metric", "repetition"), ("namespace", "team-a"), ("resource", "gate")): 0.02,
    }
    assert samples(registry, "kubetune_eval_gates_failed") == {(("namespace", "team-a"), ("resource", "gate")): 1.0}


def test_eval_series_end_a_while_after_their_run_ended(metrics, registry):
    metrics.record_eval("team-a", "ended", {"tuned": {"exact_match": 0.9}}, gates_failed=1, ended_at=1000.0)
    metrics.record_eval("team-a", "promoting", {"tuned": {"exact_match": 0.8}}, gates_failed=0)
    metrics.drop_ended(now=1000.0 + FINISHED_SERIES_SECONDS - 1)
    assert {dict(k)["resource"] for k in samples(registry, "kubetune_eval_gates_failed")} == {"ended", "promoting"}
    metrics.drop_ended(now=1000.0 + FINISHED_SERIES_SECONDS)
    assert {dict(k)["resource"] for k in samples(registry, "kubetune_eval_metric")} == {"promoting"}
    # Still promoting: its results stay until the end is told, then for the same while.
    metrics.end_eval("team-a", "promoting", 5000.0)
    metrics.drop_ended(now=5000.0 + FINISHED_SERIES_SECONDS)
    assert samples(registry, "kubetune_eval_metric") == {} and samples(registry, "kubetune_eval_gates_failed") == {}


def test_finishing_drops_training_series_and_deleting_drops_the_rest(metrics, registry):
    for name in ("done", "other"):
        metrics.record_progress("team-a", name)
        metrics.record_eval("team-a", name, {"tuned": {"exact_match": 0.9}}, gates_failed=0)
    metrics.forget_training("team-a", "done")
    assert {dict(k)["resource"] for k in samples(registry, "kubetune_training_last_progress_timestamp_seconds")} == {
        "other"}
    assert {dict(k)["resource"] for k in samples(registry, "kubetune_eval_metric")} == {"done", "other"}
    metrics.forget("team-a", "done")
    assert {dict(k)["resource"] for k in samples(registry, "kubetune_eval_metric")} == {"other"}
    assert {dict(k)["resource"] for k in samples(registry, "kubetune_eval_gates_failed")} == {"other"}


def test_the_process_wide_instance_is_created_once():
    assert operator_metrics() is operator_metrics()
