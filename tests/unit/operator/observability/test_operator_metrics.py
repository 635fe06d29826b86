"""The operator's metrics: names from contracts §8 and the helpers the handlers call."""

import asyncio

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from kubetune_operator.observability.metrics import OperatorMetrics, operator_metrics

CONTRACT_NAMES = {
    "kubetune_operator_reconciles_total",
    "kubetune_operator_reconcile_errors_total",
    "kubetune_operator_reconcile_duration_seconds_bucket",
    "kubetune_resources",
    "kubetune_resource_failures_total",
    "kubetune_training_progress_ratio",
    "kubetune_training_loss",
    "kubetune_training_reward_margin",
    "kubetune_training_tokens_per_second",
    "kubetune_training_eta_seconds",
    "kubetune_training_last_progress_timestamp_seconds",
    "kubetune_eval_metric",
    "kubetune_eval_gates_failed",
}


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


def test_every_contract_name_is_exposed(metrics, registry):
    with metrics.time_reconcile("finetunejob"):
        pass
    metrics.set_phase_counts("finetunejob", {"Running": 1})
    metrics.failures.labels("finetunejob", "OutOfMemory").inc()
    metrics.record_progress("ns", "job", {"percent": 10, "loss": 1.0, "reward_margin": 0.1,
                                          "tokens_per_second": 5.0, "eta_seconds": 60})
    metrics.record_eval("ns", "eval", {"tuned": {"exact_match": 0.5}}, gates_failed=0)
    metrics.reconcile_errors.labels("evalrun")
    exposed = {
        line.split("{")[0].split(" ")[0]
        for line in generate_latest(registry).decode().splitlines()
        if not line.startswith("#")
    }
    assert CONTRACT_NAMES <= exposed


def test_a_reconcile_that_raises_counts_as_an_error_and_propagates(metrics, registry):
    with pytest.raises(RuntimeError), metrics.time_reconcile("evalrun"):
        raise RuntimeError("API went away")
    with metrics.time_reconcile("evalrun"):
        pass
    assert samples(registry, "kubetune_operator_reconciles_total") == {
        (("kind", "evalrun"), ("result", "error")): 1.0,
        (("kind", "evalrun"), ("result", "success")): 1.0,
    }
    assert samples(registry, "kubetune_operator_reconcile_errors_total") == {(("kind", "evalrun"),): 1.0}
    assert samples(registry, "kubetune_operator_reconcile_duration_seconds_count") == {(("kind", "evalrun"),): 2.0}


def test_a_reconcile_cancelled_at_shutdown_is_no_error(metrics, registry):
    with pytest.raises(asyncio.CancelledError), metrics.time_reconcile("evalrun"):
        raise asyncio.CancelledError
    assert samples(registry, "kubetune_operator_reconciles_total") == {}
    assert samples(registry, "kubetune_operator_reconcile_errors_total") == {}


def test_a_phase_left_empty_drops_to_zero(metrics, registry):
    metrics.set_phase_counts("finetunejob", {"Running": 2, "Pending": 1})
    metrics.set_phase_counts("finetunejob", {"Succeeded": 3})
    assert samples(registry, "kubetune_resources") == {
        (("kind", "finetunejob"), ("phase", "Running")): 0.0,
        (("kind", "finetunejob"), ("phase", "Pending")): 0.0,
        (("kind", "finetunejob"), ("phase", "Succeeded")): 3.0,
    }


def test_a_progress_event_sets_the_training_gauges(metrics, registry):
    event = {"phase": "train", "percent": 30.0, "loss": 0.61, "reward_margin": 0.42,
             "tokens_per_second": 5120.0, "eta_seconds": 812.5, "message": "step 120"}
    metrics.record_progress("team-a", "dpo", event, received_at=1_700_000_000.0)
    key = (("name", "dpo"), ("namespace", "team-a"))
    assert samples(registry, "kubetune_training_progress_ratio") == {key: pytest.approx(0.3)}
    assert samples(registry, "kubetune_training_loss") == {key: 0.61}
    assert samples(registry, "kubetune_training_reward_margin") == {key: 0.42}
    assert samples(registry, "kubetune_training_tokens_per_second") == {key: 5120.0}
    assert samples(registry, "kubetune_training_eta_seconds") == {key: 812.5}
    assert samples(registry, "kubetune_training_last_progress_timestamp_seconds") == {key: 1_700_000_000.0}


def test_an_event_with_only_a_phase_still_counts_as_progress(metrics, registry):
    metrics.record_progress("team-a", "dpo", {"phase": "setup", "loss": None, "percent": True})
    assert samples(registry, "kubetune_training_loss") == {}
    assert samples(registry, "kubetune_training_progress_ratio") == {}
    assert len(samples(registry, "kubetune_training_last_progress_timestamp_seconds")) == 1


def test_eval_results_replace_the_previous_ones(metrics, registry):
    summary_metrics = {
        "base": {"exact_match": {"value": 0.4, "ciLow": 0.3, "ciHigh": 0.5}},
        "dpo": {"exact_match": {"value": 0.7}, "repetition": 0.02, "broken": {"ciLow": 1}},
    }
    metrics.record_eval("team-a", "gate", {"old": {"exact_match": 0.1}}, gates_failed=0)
    metrics.record_eval("team-a", "gate", summary_metrics, gates_failed=1)
    assert samples(registry, "kubetune_eval_metric") == {
        (("candidate", "base"), ("metric", "exact_match"), ("name", "gate"), ("namespace", "team-a")): 0.4,
        (("candidate", "dpo"), ("metric", "exact_match"), ("name", "gate"), ("namespace", "team-a")): 0.7,
        (("candidate", "dpo"), ("metric", "repetition"), ("name", "gate"), ("namespace", "team-a")): 0.02,
    }
    assert samples(registry, "kubetune_eval_gates_failed") == {(("name", "gate"), ("namespace", "team-a")): 1.0}


def test_finishing_drops_training_series_and_deleting_drops_the_rest(metrics, registry):
    for name in ("done", "other"):
        metrics.record_progress("team-a", name, {"percent": 100, "loss": 0.1})
        metrics.record_eval("team-a", name, {"tuned": {"exact_match": 0.9}}, gates_failed=0)
    metrics.forget_training("team-a", "done")
    assert {dict(k)["name"] for k in samples(registry, "kubetune_training_loss")} == {"other"}
    assert {dict(k)["name"] for k in samples(registry, "kubetune_eval_metric")} == {"done", "other"}
    metrics.forget("team-a", "done")
    assert {dict(k)["name"] for k in samples(registry, "kubetune_eval_metric")} == {"other"}
    assert {dict(k)["name"] for k in samples(registry, "kubetune_eval_gates_failed")} == {"other"}
    assert {dict(k)["name"] for k in samples(registry, "kubetune_training_last_progress_timestamp_seconds")} == {
        "other"
    }


def test_the_process_wide_instance_is_created_once():
    assert operator_metrics() is operator_metrics()
