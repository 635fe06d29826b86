"""Gates: conditions on metrics, each evaluated into the result so the operator can act on them.

A gate compares one number with its threshold: a candidate's metric, or (with
`relative_to_baseline`) its delta vs the baseline; the point estimate or, with
`use_confidence_bound`, the conservative end of its confidence interval (the lower bound for
`>`/`>=`, the upper bound for `<`/`<=`), so that a gate passes only when the whole interval does. A gate without `candidate` applies to every candidate but the
baseline (to the baseline alone when it is the only one). A metric no answer could be scored on
has no value, and its gate fails.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from typing import Any

from kubetune_trainer.eval.config import GateConfig
from kubetune_trainer.eval.stats import Estimate

COMPARE = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}


def _compared_value(gate: GateConfig, estimate: Estimate) -> float | None:
    if not gate.use_confidence_bound:
        return estimate.value
    return estimate.ci_low if gate.comparator in (">", ">=") else estimate.ci_high


def gate_name(gate: GateConfig, candidate: str) -> str:
    if gate.name:
        return gate.name
    subject = f"Δ{gate.metric}" if gate.relative_to_baseline else gate.metric
    if gate.use_confidence_bound:
        subject = f"{subject} (CI bound)"
    return f"{candidate}: {subject} {gate.comparator} {gate.threshold:g}"


def evaluate_gates(
    gates: list[GateConfig],
    candidates: list[str],
    baseline: str,
    metrics: Mapping[str, Mapping[str, Estimate]],
    deltas: Mapping[str, Mapping[str, Estimate]],
    columns: Mapping[str, str],
) -> list[dict[str, Any]]:
    """One result per (gate, candidate): name, metric, candidate, value, threshold, comparator, passed.

    `columns` maps each gate's `metric` to the metric column it tests (EvalConfig.column_of).
    """
    others = [c for c in candidates if c != baseline] or [baseline]
    results = []
    for gate in gates:
        for candidate in [gate.candidate] if gate.candidate else others:
            table = deltas if gate.relative_to_baseline else metrics
            estimate = table.get(candidate, {}).get(columns[gate.metric])
            value = _compared_value(gate, estimate) if estimate else None
            passed = value is not None and COMPARE[gate.comparator](value, gate.threshold)
            results.append(
                {
                    "name": gate_name(gate, candidate),
                    "metric": gate.metric,
                    "candidate": candidate,
                    "value": value,
                    "threshold": gate.threshold,
                    "comparator": gate.comparator,
                    "passed": bool(passed),
                    "relativeToBaseline": gate.relative_to_baseline,
                    "useConfidenceBound": gate.use_confidence_bound,
                }
            )
    return results
