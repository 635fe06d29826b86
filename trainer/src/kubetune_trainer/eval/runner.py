"""One evaluation from config to report: generate, score, compare, gate, write, upload.

Candidates that run on the same true base share one engine (vLLM: one LLM serving every
adapter through LoRA requests); each distinct base gets its own engine, opened and closed in
turn so that only one model occupies the accelerator at a time. Judge models load after the
candidates' engines are closed, for the same reason.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from kubetune_trainer import storage
from kubetune_trainer.artifacts.lineage import normalize_model_uri
from kubetune_trainer.artifacts.materialize import materialize
from kubetune_trainer.errors import DataError
from kubetune_trainer.eval import candidates
from kubetune_trainer.eval.config import EvalConfig, RubricMetric
from kubetune_trainer.eval.engines import (
    EngineFactory,
    EngineOptions,
    Generation,
    Request,
    choose_engine,
    render_prompt_ids,
)
from kubetune_trainer.eval.gates import evaluate_gates
from kubetune_trainer.eval.metrics import score_metric
from kubetune_trainer.eval.report import write_report
from kubetune_trainer.eval.result import MISSING_STRATUM, EvalResult
from kubetune_trainer.eval.rubric import JudgeScorer, RuleScorer
from kubetune_trainer.eval.stats import Estimate, compare
from kubetune_trainer.eval.testset import Example, load_test_set
from kubetune_trainer.progress import ProgressReporter, fits_termination_message, metrics

log = logging.getLogger(__name__)


def with_system_prompt(examples: list[Example], system_prompt: str | None) -> list[Example]:
    """The configured system prompt replaces any system message the rows carry."""
    if system_prompt is None:
        return examples
    return [
        replace(
            e,
            prompt=[
                {"role": "system", "content": system_prompt},
                *(m for m in e.prompt if m["role"] != "system"),
            ],
        )
        for e in examples
    ]


@dataclass
class GenerationProgress:
    """Turns engine callbacks into progress events and the eval gauges."""

    reporter: ProgressReporter
    total: int
    done: int = 0
    tokens: int = 0
    seconds: float = 0.0
    _since: float = 0.0

    def start(self) -> None:
        self._since = time.monotonic()

    def stop(self) -> None:
        self.seconds += time.monotonic() - self._since

    def __call__(self, prompts: int, tokens: int) -> None:
        self.done += prompts
        self.tokens += tokens
        metrics().prompts_total.inc(prompts)
        metrics().eval_tokens_total.inc(tokens)
        elapsed = self.seconds + time.monotonic() - self._since
        rate = self.done / elapsed if elapsed > 0 else 0.0
        token_rate = self.tokens / elapsed if elapsed > 0 else 0.0
        self.reporter.update(
            # The last answer always reports, so that the final count is never rate-limited away.
            force=self.done >= self.total,
            phase="generate",
            step=self.done,
            total_steps=self.total,
            percent=round(100.0 * self.done / self.total, 2),
            eta_seconds=round((self.total - self.done) / rate, 1) if rate > 0 else None,
            message=f"{self.done}/{self.total} answers, {rate:.2f} prompts/s, {token_rate:.1f} tokens/s",
        )

    def throughput(self) -> dict[str, float]:
        seconds = max(self.seconds, 1e-9)
        return {
            "prompts": self.done,
            "tokens": self.tokens,
            "generateSeconds": round(self.seconds, 3),
            "promptsPerSecond": round(self.done / seconds, 3),
            "tokensPerSecond": round(self.tokens / seconds, 3),
        }


def _check_length(example: Example, prompt_ids: list[int], max_model_len: int | None) -> None:
    if max_model_len is not None and len(prompt_ids) >= max_model_len:
        raise DataError(
            f"{example.source}: the prompt is {len(prompt_ids)} tokens, which leaves no room to answer "
            f"within max_model_len {max_model_len}"
        )


def generate_all(
    config: EvalConfig,
    examples: list[Example],
    resolved: list[candidates.Candidate],
    factory: EngineFactory,
    cache_dir: Path,
    progress: GenerationProgress,
) -> dict[str, list[Generation]]:
    options = EngineOptions.from_config(config)
    groups: dict[str, list[candidates.Candidate]] = {}
    for candidate in resolved:
        groups.setdefault(candidate.base.key, []).append(candidate)
    answers: dict[str, list[Generation]] = {}
    for members in groups.values():
        base = members[0].base
        log.info("loading %s for %s", base.describe(), ", ".join(c.name for c in members))
        model_path = candidates.build_base(base, cache_dir)
        adapters = {c.name: materialize(c.adapter, cache_dir) for c in members if c.adapter}
        engine = factory(model_path, adapters, options)
        try:
            prompt_ids = [
                render_prompt_ids(engine.tokenizer, e.prompt, base.describe(), e.source) for e in examples
            ]
            for example, ids in zip(examples, prompt_ids, strict=True):
                _check_length(example, ids, config.max_model_len)
            requests = [
                Request(ids, adapter=c.name if c.adapter else None) for c in members for ids in prompt_ids
            ]
            progress.start()
            generations = engine.generate(requests, progress)
            progress.stop()
        finally:
            engine.close()
        for position, candidate in enumerate(members):
            answers[candidate.name] = generations[position * len(examples) : (position + 1) * len(examples)]
    return answers


def score_all(
    config: EvalConfig,
    examples: Sequence[Example],
    answers: dict[str, list[Generation]],
    factory: EngineFactory,
    cache_dir: Path,
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, dict[str, list[str | None]]], list[str]]:
    """column -> candidate -> per-answer scores; judge verdicts; warnings."""
    scores: dict[str, dict[str, np.ndarray]] = {}
    verdicts: dict[str, dict[str, list[str | None]]] = {}
    warnings: list[str] = []
    for metric in config.metrics:
        if not isinstance(metric, RubricMetric):
            for name, generations in answers.items():
                for column, values in score_metric(metric, examples, generations).items():
                    scores.setdefault(column, {})[name] = values
            continue
        if metric.rules is not None:
            scores[metric.key] = RuleScorer(metric).score(examples, answers)
            continue
        assert metric.judge is not None
        judge_path = materialize(normalize_model_uri(metric.judge.model), cache_dir)
        options = replace(
            EngineOptions.from_config(config),
            max_new_tokens=metric.judge.max_new_tokens,
            temperature=0.0,
            beam_width=1,
        )
        engine = factory(judge_path, {}, options)
        try:
            scorer = JudgeScorer(metric, engine, metric.judge.model)
            scores[metric.key] = scorer.score(examples, answers)
        finally:
            engine.close()
        verdicts[metric.key] = scorer.outputs
        if scorer.unparsed:
            warnings.append(
                f"{metric.key}: the judge's verdict matched no score ({metric.judge.score_pattern}) for "
                f"{scorer.unparsed} answers; they are left out of the metric"
            )
    for metric in config.metrics:
        if metric.type == "judgement":
            unscorable = int(np.isnan(next(iter(scores[metric.key].values()))).sum())
            if unscorable:
                warnings.append(
                    f"{metric.key}: {unscorable} references hold no judgement matching {metric.pattern!r}; "
                    "those prompts are left out of the metric"
                )
    return scores, verdicts, warnings


def strata_of(config: EvalConfig, examples: Sequence[Example]) -> dict[str, list[int]]:
    """Prompt indices per value of `stratify_by`; empty when no row carries that field."""
    field = config.stratify_by
    if not field or not any(field in e.metadata for e in examples):
        return {}
    groups: dict[str, list[int]] = {}
    for e in examples:
        value = e.metadata.get(field)
        groups.setdefault(MISSING_STRATUM if value is None else str(value), []).append(e.index)
    return dict(sorted(groups.items()))


def estimate_all(
    config: EvalConfig, scores: dict[str, dict[str, np.ndarray]], names: list[str]
) -> tuple[dict[str, dict[str, Estimate]], dict[str, dict[str, Estimate]]]:
    """candidate -> column -> estimate, and the same for deltas vs the baseline."""
    baseline = config.baseline.name
    estimates: dict[str, dict[str, Estimate]] = {n: {} for n in names}
    deltas: dict[str, dict[str, Estimate]] = {n: {} for n in names if n != baseline}
    for column, per_candidate in scores.items():
        per, delta = compare(
            per_candidate, baseline, config.bootstrap_samples, config.confidence, config.bootstrap_seed
        )
        for name in names:
            estimates[name][column] = per[name]
        for name, estimate in delta.items():
            deltas[name][column] = estimate
    return estimates, deltas


def assess(
    config: EvalConfig,
    examples: Sequence[Example],
    resolved: list[candidates.Candidate],
    answers: dict[str, list[Generation]],
    scores: dict[str, dict[str, np.ndarray]],
) -> EvalResult:
    """Estimates with intervals, overall and per stratum, and the gates, from every answer's scores."""
    names = [c.name for c in resolved]
    estimates, deltas = estimate_all(config, scores, names)
    strata = {
        stratum: estimate_all(config, {c: {n: v[n][indices] for n in names} for c, v in scores.items()}, names)[0]
        for stratum, indices in strata_of(config, examples).items()
    }
    gate_columns = {g.metric: config.column_of(g.metric) for g in config.gates}
    gates = evaluate_gates(config.gates, names, config.baseline.name, estimates, deltas, gate_columns)
    return EvalResult(
        config=config,
        examples=list(examples),
        candidates=resolved,
        generations=answers,
        columns=config.metric_columns(),
        scores=scores,
        metrics=estimates,
        deltas=deltas,
        strata=strata,
        gates=gates,
    )


def run_eval(
    config: EvalConfig,
    reporter: ProgressReporter | None = None,
    factory: EngineFactory | None = None,
) -> dict[str, Any]:
    """Run the whole evaluation and upload its report; returns the summary (summary.json)."""
    reporter = reporter or ProgressReporter()
    fallback = None
    if factory is None:
        factory, fallback = choose_engine(config.engine)
        if fallback:
            log.warning(fallback)
    timings: dict[str, float] = {}
    clock = time.monotonic()

    def phase_done(name: str) -> None:
        nonlocal clock
        timings[name] = round(time.monotonic() - clock, 3)
        clock = time.monotonic()

    with ExitStack() as stack:
        cache_root = os.environ.get("KUBETUNE_CACHE_DIR")
        cache_dir = (
            Path(cache_root) if cache_root else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        )
        reporter.update(phase="setup", force=True, message=f"reading {config.test_set}")
        examples = with_system_prompt(
            load_test_set(config.test_set, config.test_split, config.max_samples), config.system_prompt
        )
        resolved = candidates.resolve_candidates(config.candidates, config.baseline.name)
        phase_done("setup")

        total = len(examples) * len(resolved)
        reporter.update(phase="generate", force=True, step=0, total_steps=total, percent=0.0)
        progress = GenerationProgress(reporter, total)
        answers = generate_all(config, examples, resolved, factory, cache_dir, progress)
        phase_done("generate")

        reporter.update(phase="score", force=True, message=f"scoring {total} answers")
        scores, verdicts, warnings = score_all(config, examples, answers, factory, cache_dir)
        result = assess(config, examples, resolved, answers, scores)
        phase_done("score")

        reporter.update(phase="report", force=True, message="writing the report")
        result.judge_outputs = verdicts
        result.warnings = ([fallback] if fallback else []) + [w for c in resolved for w in c.warnings] + warnings
        result.throughput = progress.throughput()
        result.timings = timings
        output = storage.parse(config.output).uri
        staging = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kubetune-eval-")))
        summary = write_report(result, staging, output)
        storage.upload_dir(staging, output)
        phase_done("report")
        summary["timings"] = timings
        failed = [g["name"] for g in result.gates if not g["passed"]]
        reporter.update(
            phase="done",
            force=True,
            percent=100.0,
            message=("all gates passed" if not failed else f"gates failed: {', '.join(failed)}")
            + f"; report {summary['report']}",
        )
        return summary


def termination_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """The ≤4 KiB message for the operator (docs/contracts.md §5).

    `gateTally` always fits and is what the operator counts. When the whole message does not fit,
    the metrics go first, then gate results from the end of the list: failing gates come first in
    it, so the ones a reader needs are the last to go. The report keeps every result.
    """
    gates = sorted(
        (
            {k: g[k] for k in ("name", "metric", "candidate", "value", "threshold", "comparator", "passed")}
            for g in summary["gates"]
        ),
        key=lambda g: bool(g["passed"]),
    )
    message = {
        "kind": "eval",
        "output": summary["output"],
        "report": summary["report"],
        "passed": summary["passed"],
        "gateTally": {"passed": sum(1 for g in gates if g["passed"]), "total": len(gates)},
        "gates": gates,
        "metrics": {
            name: {
                column: {"value": e["value"], "ciLow": e["ciLow"], "ciHigh": e["ciHigh"]}
                for column, e in per.items()
            }
            for name, per in summary["metrics"].items()
        },
    }
    if fits_termination_message(message):
        return message
    message = {k: v for k, v in message.items() if k != "metrics"} | {"truncated": True}
    kept = len(gates)
    while kept and not fits_termination_message(message | {"gates": gates[:kept]}):
        kept -= 1
    return message | {"gates": gates[:kept]}

