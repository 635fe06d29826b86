"""Rubric metrics (pass, overreach, hallucination, red-flag recognition, ...): rules or a judge model.

Both scorers share one interface, `score(examples, answers) -> {candidate: per-answer scores}`,
so a new kind of grader plugs in beside them. Rows outside the metric's `applies_to` are NaN
(not scored), never zero.

* `RuleScorer`: regular expressions from the config; an answer passes (1) when every rule holds,
  i.e. each `match` pattern is found in it and no `no_match` pattern is.
* `JudgeScorer`: a judge model, run through the same engine interface as the candidates,
  reads a prompt built from the config's template and answers with a score that a regex
  picks out; the score is divided by `max_score` and clipped to [0, 1]. An answer the judge
  scores unreadably is NaN and counted in `unparsed`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from kubetune_trainer.eval.config import JudgeConfig, RubricMetric, RubricRule
from kubetune_trainer.eval.engines import Engine, Generation, Request, render_prompt_ids
from kubetune_trainer.eval.testset import Example


class RubricScorer(Protocol):
    def score(
        self, examples: Sequence[Example], answers: Mapping[str, Sequence[Generation]]
    ) -> dict[str, np.ndarray]: ...


def _as_text(value: Any) -> str:
    """Metadata and config values compared as JSON text, so that `true` matches a JSON true."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def applies(example: Example, applies_to: Mapping[str, Any]) -> bool:
    for field, wanted in applies_to.items():
        allowed = wanted if isinstance(wanted, list) else [wanted]
        if _as_text(example.metadata.get(field)) not in {_as_text(v) for v in allowed}:
            return False
    return True


def rule_score(answer: str, rules: Sequence[RubricRule]) -> float:
    return float(all((re.search(r.pattern, answer) is not None) == (r.expect == "match") for r in rules))


PLACEHOLDER = re.compile(r"\{(prompt|answer|reference)\}")


def judge_prompt(template: str, example: Example, answer: str) -> str:
    """The template with {prompt}, {answer} and {reference} filled in; other braces stay as written.

    One pass over the template, so that a placeholder inside a prompt, reference or answer is
    text, never filled in: an answer that says "{reference}" must not be graded as the reference.
    """
    if len(example.prompt) == 1:
        question = example.prompt[0]["content"]
    else:
        question = "\n".join(f"{m['role']}: {m['content']}" for m in example.prompt)
    values = {"prompt": question, "reference": example.reference, "answer": answer}
    return PLACEHOLDER.sub(lambda match: values[match.group(1)], template)


def parse_judge_score(text: str, pattern: str, max_score: float) -> float:
    match = re.search(pattern, text)
    if match is None:
        return math.nan
    try:
        value = float(match.group(1))
    except (TypeError, ValueError):
        return math.nan
    return min(max(value / max_score, 0.0), 1.0)


class RuleScorer:
    def __init__(self, metric: RubricMetric):
        assert metric.rules is not None
        self.metric = metric
        self.rules = metric.rules

    def score(
        self, examples: Sequence[Example], answers: Mapping[str, Sequence[Generation]]
    ) -> dict[str, np.ndarray]:
        return {
            name: np.asarray(
                [
                    rule_score(g.text, self.rules) if applies(e, self.metric.applies_to) else math.nan
                    for e, g in zip(examples, generations, strict=True)
                ],
                dtype=float,
            )
            for name, generations in answers.items()
        }


class JudgeScorer:
    def __init__(self, metric: RubricMetric, engine: Engine, judge_model: str):
        assert metric.judge is not None
        self.metric = metric
        self.judge: JudgeConfig = metric.judge
        self.engine = engine
        self.judge_model = judge_model
        self.unparsed = 0
        self.outputs: dict[str, list[str | None]] = {}

    def score(
        self, examples: Sequence[Example], answers: Mapping[str, Sequence[Generation]]
    ) -> dict[str, np.ndarray]:
        jobs: list[tuple[str, int]] = []
        requests: list[Request] = []
        for name, generations in answers.items():
            for i, (example, generation) in enumerate(zip(examples, generations, strict=True)):
                if applies(example, self.metric.applies_to):
                    message = judge_prompt(self.judge.prompt_template, example, generation.text)
                    user = [{"role": "user", "content": message}]
                    ids = render_prompt_ids(self.engine.tokenizer, user, self.judge_model, example.source)
                    jobs.append((name, i))
                    requests.append(Request(ids))
        scores = {name: np.full(len(examples), math.nan) for name in answers}
        self.outputs = {name: [None] * len(examples) for name in answers}
        for (name, i), verdict in zip(jobs, self.engine.generate(requests), strict=True):
            value = parse_judge_score(verdict.text, self.judge.score_pattern, self.judge.max_score)
            self.unparsed += math.isnan(value)
            scores[name][i] = value
            self.outputs[name][i] = verdict.text
        return scores
