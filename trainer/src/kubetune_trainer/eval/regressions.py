"""Which way is better for each metric column, and the prompts on which a candidate did worse than
the baseline: what explains a failed gate row by row.

A gate says the direction of the column it tests (`>=`/`>`: higher is better, `<=`/`<`: lower);
columns no gate tests take their metric type's direction (accuracy-like metrics up, repetition
down), and length has none. A row is a regression when both answers were scored and the
candidate's score is on the wrong side of the baseline's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from kubetune_trainer.eval.result import EvalResult

HIGHER_IS_BETTER = ("judgement", "exact_match", "normalized_match", "contains", "regex", "rubric")


def directions(result: EvalResult) -> dict[str, int]:
    """column → +1 (higher is better), -1 (lower is better) or 0 (neither)."""
    found: dict[str, int] = {}
    for metric in result.config.metrics:
        for column in metric.columns():
            if metric.type in HIGHER_IS_BETTER:
                found[column.name] = 1
            elif metric.type == "repetition":
                found[column.name] = -1
            else:
                found[column.name] = 0
    for gate in result.config.gates:
        column = result.config.column_of(gate.metric)
        if column is not None:
            found[column] = 1 if gate.comparator in (">", ">=") else -1
    return found


def gated_columns(result: EvalResult) -> list[str]:
    """The columns gates test, in gate order."""
    columns = (result.config.column_of(gate.metric) for gate in result.config.gates)
    return list(dict.fromkeys(c for c in columns if c is not None))


@dataclass(frozen=True)
class Regression:
    """The prompts (example positions) where `candidate` scored worse than the baseline on `column`."""

    candidate: str
    column: str
    direction: int
    rows: list[int]  # sorted: the largest loss first
    losses: list[float]  # |candidate − baseline| per row, in the same order
    compared: int  # rows where both were scored

    @property
    def share(self) -> float:
        return len(self.rows) / self.compared if self.compared else math.nan


def regression(result: EvalResult, candidate: str, column: str, direction: int) -> Regression:
    base = result.scores[column][result.baseline]
    mine = result.scores[column][candidate]
    both = ~(np.isnan(base) | np.isnan(mine))
    loss = np.where(both, (base - mine) * direction, 0.0)
    worse = np.flatnonzero(loss > 0)
    # Stable: equal losses keep the test set's order.
    order = worse[np.argsort(-loss[worse], kind="stable")]
    return Regression(candidate, column, direction, [int(i) for i in order], [float(loss[i]) for i in order],
                      int(both.sum()))


def regressions(result: EvalResult, columns: list[str]) -> list[Regression]:
    """For every candidate but the baseline, the regressions on each of `columns` that has a direction."""
    ways = directions(result)
    return [
        regression(result, candidate, column, ways[column])
        for candidate in result.names
        if candidate != result.baseline
        for column in columns
        if ways.get(column)
    ]
