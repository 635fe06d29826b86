from __future__ import annotations

import numpy as np
import pytest

from kubetune_trainer.eval.config import GateConfig
from kubetune_trainer.eval.gates import evaluate_gates
from kubetune_trainer.eval.stats import Estimate, bootstrap, compare


def test_a_constant_metric_has_a_zero_width_interval():
    [estimate] = bootstrap(np.ones((1, 20)), samples=200, confidence=0.95, seed=0)
    assert (estimate.value, estimate.ci_low, estimate.ci_high, estimate.n) == (1.0, 1.0, 1.0, 20)


def test_interval_brackets_the_mean_and_narrows_with_more_prompts():
    rng = np.random.default_rng(1)
    small = rng.integers(0, 2, size=40).astype(float)
    large = rng.integers(0, 2, size=4000).astype(float)
    [few] = bootstrap(small[None, :], samples=500, confidence=0.95, seed=0)
    [many] = bootstrap(large[None, :], samples=500, confidence=0.95, seed=0)
    assert few.ci_low <= few.value <= few.ci_high
    assert few.value == pytest.approx(small.mean())
    assert (many.ci_high - many.ci_low) < (few.ci_high - few.ci_low) / 5
    # For a proportion near 0.5 over 4000 prompts the 95% interval is about ±0.0155.
    assert many.ci_high - many.ci_low == pytest.approx(2 * 1.96 * np.sqrt(0.25 / 4000), rel=0.2)


def test_same_seed_same_interval_and_nan_is_left_out():
    values = np.array([[1.0, 0.0, np.nan, 1.0, 1.0, 0.0]])
    first = bootstrap(values, samples=300, confidence=0.9, seed=5)
    assert first == bootstrap(values, samples=300, confidence=0.9, seed=5)
    assert first[0].n == 5 and first[0].value == pytest.approx(0.6)
    [nothing] = bootstrap(np.full((1, 4), np.nan), samples=50, confidence=0.95, seed=0)
    assert nothing == Estimate(None, None, None, 0)


def test_paired_deltas_cancel_prompt_difficulty():
    # Prompt difficulty varies a lot, but the candidate is better by exactly 0.1 on every prompt:
    # a paired delta interval is exactly that, an unpaired comparison would be wide.
    difficulty = np.random.default_rng(2).random(50)
    scores = {"base": difficulty, "new": difficulty + 0.1}
    estimates, deltas = compare(scores, "base", samples=400, confidence=0.95, seed=0)
    assert set(deltas) == {"new"}
    assert deltas["new"].value == pytest.approx(0.1)
    assert deltas["new"].ci_low == pytest.approx(0.1) and deltas["new"].ci_high == pytest.approx(0.1)
    assert estimates["new"].ci_high - estimates["new"].ci_low > 0.1


def estimate(value, low, high):
    return Estimate(value, low, high, 10)


METRICS = {
    "base": {"acc": estimate(0.5, 0.4, 0.6)},
    "a": {"acc": estimate(0.7, 0.55, 0.85)},
    "b": {"acc": estimate(0.45, 0.3, 0.6)},
}
DELTAS = {"a": {"acc": estimate(0.2, 0.05, 0.35)}, "b": {"acc": estimate(-0.05, -0.2, 0.1)}}


def gate(**fields) -> GateConfig:
    return GateConfig(**({"metric": "acc", "comparator": ">=", "threshold": 0.6} | fields))


def run(*gates: GateConfig):
    return evaluate_gates(list(gates), ["base", "a", "b"], "base", METRICS, DELTAS, {"acc": "acc"})


def test_a_gate_without_candidate_applies_to_every_candidate_but_the_baseline():
    results = run(gate())
    assert [(r["candidate"], r["value"], r["passed"]) for r in results] == [
        ("a", 0.7, True),
        ("b", 0.45, False),
    ]
    assert results[0]["name"] == "a: acc >= 0.6"
    assert set(results[0]) >= {"name", "metric", "candidate", "value", "threshold", "comparator", "passed"}


def test_relative_and_confidence_bound_gates():
    [relative] = run(gate(candidate="a", threshold=0.0, relative_to_baseline=True, name="better"))
    assert (relative["name"], relative["value"], relative["passed"]) == ("better", 0.2, True)
    [bound] = run(gate(candidate="a", threshold=0.6, use_confidence_bound=True))
    assert (bound["value"], bound["passed"]) == (0.55, False)
    [upper] = run(gate(candidate="b", comparator="<", threshold=0.65, use_confidence_bound=True))
    assert (upper["value"], upper["passed"]) == (0.6, True)


@pytest.mark.parametrize(("comparator", "passed"), [(">=", True), (">", False), ("<=", True), ("<", False)])
def test_comparators_at_the_threshold(comparator, passed):
    [result] = run(gate(candidate="a", comparator=comparator, threshold=0.7))
    assert result["passed"] is passed


def test_a_metric_without_a_value_fails_its_gate():
    metrics = {"base": {"acc": estimate(0.5, 0.4, 0.6)}, "a": {"acc": Estimate(None, None, None, 0)}}
    [result] = evaluate_gates([gate()], ["base", "a"], "base", metrics, {"a": {}}, {"acc": "acc"})
    assert result["value"] is None and result["passed"] is False


def test_with_only_a_baseline_the_gate_applies_to_it():
    [result] = evaluate_gates([gate()], ["base"], "base", METRICS, {}, {"acc": "acc"})
    assert (result["candidate"], result["passed"]) == ("base", False)
