"""Everything an evaluation found, in one place: what the report writes and the summary carries."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kubetune_trainer.eval.candidates import Candidate
from kubetune_trainer.eval.config import EvalConfig, MetricColumn
from kubetune_trainer.eval.engines import Generation
from kubetune_trainer.eval.stats import Estimate
from kubetune_trainer.eval.testset import Example

MISSING_STRATUM = "(none)"


@dataclass
class EvalResult:
    config: EvalConfig
    examples: list[Example]
    candidates: list[Candidate]
    generations: dict[str, list[Generation]]
    columns: dict[str, MetricColumn]
    # column -> candidate -> one score per example (NaN: not scored)
    scores: dict[str, dict[str, np.ndarray]]
    # candidate -> column -> estimate; deltas only for candidates other than the baseline
    metrics: dict[str, dict[str, Estimate]]
    deltas: dict[str, dict[str, Estimate]]
    # stratum -> candidate -> column -> estimate
    strata: dict[str, dict[str, dict[str, Estimate]]]
    gates: list[dict[str, Any]]
    # column -> candidate -> the judge's raw verdict per example
    judge_outputs: dict[str, dict[str, list[str | None]]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    throughput: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.candidates]

    @property
    def baseline(self) -> str:
        return next(c.name for c in self.candidates if c.baseline)

    @property
    def passed(self) -> bool:
        return all(gate["passed"] for gate in self.gates)

    def stratum_of(self, example: Example) -> str | None:
        field_name = self.config.stratify_by
        if not field_name or not self.strata:
            return None
        value = example.metadata.get(field_name)
        return MISSING_STRATUM if value is None else str(value)
