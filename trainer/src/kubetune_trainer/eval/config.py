"""`EvalConfig`: the file `kubetune-trainer eval --config FILE` reads (docs/contracts.md §7).

The operator renders it from an EvalRun; users write it by hand for local runs. Every mistake
surfaces as one ConfigError that names the field (`candidates[1].adapter`, `gates[0].metric`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from kubetune_trainer.configfile import read_config_file
from kubetune_trainer.errors import ConfigError

# Candidate names become CSV columns, file names and Prometheus label values.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
# The side-by-side table's `<candidate>.predict` and `<candidate>.finished_by_eos` sit beside
# `<candidate>.<metric column>`, so no metric may take these names.
ANSWER_COLUMNS = ("predict", "finished_by_eos")


def _compile(pattern: str) -> re.Pattern:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None


Scalar = str | int | float | bool
RegexPattern = Annotated[str, AfterValidator(lambda value: _compile(value).pattern)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CandidateConfig(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    model: str | None = None
    adapter: str | None = None
    baseline: bool = False

    @model_validator(mode="after")
    def _model_or_adapter(self) -> CandidateConfig:
        if not self.model and not self.adapter:
            raise ValueError("a candidate needs `model`, `adapter` or both")
        return self


class MetricColumn(BaseModel):
    """One number per answer that a metric produces; `bounded` means it lies in [0, 1]."""

    model_config = ConfigDict(frozen=True)

    name: str
    metric: str
    bounded: bool = True


class _Metric(_Strict):
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")

    @property
    def key(self) -> str:
        return self.name or self.type  # type: ignore[attr-defined]

    def columns(self) -> list[MetricColumn]:
        return [MetricColumn(name=self.key, metric=self.key)]

    def headline(self) -> str:
        """The column a bare metric name stands for (in gates): the first one."""
        return self.columns()[0].name


class ExactMatchMetric(_Metric):
    type: Literal["exact_match"]


class NormalizedMatchMetric(_Metric):
    type: Literal["normalized_match"]


class ContainsMetric(_Metric):
    type: Literal["contains"]


class RegexMetric(_Metric):
    type: Literal["regex"]
    pattern: RegexPattern


class JudgementMetric(_Metric):
    """Accuracy of a structured judgement: the pattern's capture in the answer vs in the reference."""

    type: Literal["judgement"]
    pattern: str = r"判断\s*[:：]\s*(是|否)"

    @field_validator("pattern")
    @classmethod
    def _one_group(cls, value: str) -> str:
        if _compile(value).groups > 1:
            raise ValueError("use at most one capture group (the judgement)")
        return value


class RepetitionMetric(_Metric):
    type: Literal["repetition"]
    n: int = Field(default=4, ge=1, le=64)
    # An answer whose repeated-n-gram rate reaches this is counted as a repeater.
    threshold: float = Field(default=0.5, gt=0.0, le=1.0)

    def columns(self) -> list[MetricColumn]:
        return [
            MetricColumn(name=f"{self.key}.ngram_rate", metric=self.key),
            MetricColumn(name=f"{self.key}.longest_span", metric=self.key, bounded=False),
            MetricColumn(name=f"{self.key}.no_eos_rate", metric=self.key),
            MetricColumn(name=f"{self.key}.repeater_rate", metric=self.key),
        ]


class LengthMetric(_Metric):
    type: Literal["length"]

    def columns(self) -> list[MetricColumn]:
        return [
            MetricColumn(name=f"{self.key}.tokens", metric=self.key, bounded=False),
            MetricColumn(name=f"{self.key}.chars", metric=self.key, bounded=False),
        ]


class RubricRule(_Strict):
    """A regex searched in the answer; the rule holds when it matches (`match`) or does not (`no_match`)."""

    pattern: RegexPattern
    expect: Literal["match", "no_match"] = "match"


class JudgeConfig(_Strict):
    """A judge model, run through the same engine as the candidates, that grades each answer."""

    model: str
    prompt_template: str
    # The first group is the score; it is divided by max_score and clipped to [0, 1].
    # A 0..1 number standing alone: not the 1 of "15" nor the 0 of "2023" (as the operator's default).
    score_pattern: str = r"(?<![\d.])([01](?:\.\d+)?)(?!\.?\d)"
    max_score: float = Field(default=1.0, gt=0.0)
    max_new_tokens: int = Field(default=64, ge=1)

    @field_validator("prompt_template")
    @classmethod
    def _mentions_answer(cls, value: str) -> str:
        if "{answer}" not in value:
            raise ValueError("the template must contain {answer} (and may use {prompt} and {reference})")
        return value

    @field_validator("score_pattern")
    @classmethod
    def _one_group(cls, value: str) -> str:
        if _compile(value).groups != 1:
            raise ValueError("use exactly one capture group around the score")
        return value


class RubricMetric(_Metric):
    type: Literal["rubric"]
    # The answer passes (scores 1) when every rule holds.
    rules: list[RubricRule] | None = Field(default=None, min_length=1)
    judge: JudgeConfig | None = None
    # Score only rows whose metadata has these values (e.g. red-flag recognition on red-flag cases).
    applies_to: dict[str, Scalar | list[Scalar]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _rules_or_judge(self) -> RubricMetric:
        if (self.rules is None) == (self.judge is None):
            raise ValueError("a rubric metric needs exactly one of `rules` or `judge`")
        return self


MetricConfig = Annotated[
    ExactMatchMetric
    | NormalizedMatchMetric
    | ContainsMetric
    | RegexMetric
    | JudgementMetric
    | RepetitionMetric
    | LengthMetric
    | RubricMetric,
    Field(discriminator="type"),
]
METRIC_TYPES = (
    "exact_match",
    "normalized_match",
    "contains",
    "regex",
    "judgement",
    "repetition",
    "length",
    "rubric",
)


def default_metrics() -> list[Any]:
    return [
        ExactMatchMetric(type="exact_match"),
        NormalizedMatchMetric(type="normalized_match"),
        RepetitionMetric(type="repetition"),
        LengthMetric(type="length"),
    ]


class GateConfig(_Strict):
    name: str | None = None
    metric: str
    # Omitted: the gate applies to every candidate but the baseline.
    candidate: str | None = None
    comparator: Literal[">=", ">", "<=", "<"]
    threshold: float
    relative_to_baseline: bool = False
    # Compare the interval's conservative end (the lower bound for > and >=, the upper for < and <=).
    use_confidence_bound: bool = False


class EvalConfig(_Strict):
    output: str = Field(min_length=1)
    test_set: str = Field(min_length=1)
    test_split: str = Field(default="test", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    max_samples: int | None = Field(default=None, ge=1)
    system_prompt: str | None = None
    candidates: list[CandidateConfig] = Field(min_length=1)
    engine: Literal["hf", "vllm"] = "hf"
    tensor_parallel: int = Field(default=1, ge=1)
    max_new_tokens: int = Field(default=256, ge=1)
    temperature: float = Field(default=0.0, ge=0.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    beam_width: int = Field(default=1, ge=1)
    batch_size: int = Field(default=8, ge=1)
    max_model_len: int | None = Field(default=None, ge=1)
    seed: int = 0
    metrics: list[MetricConfig] = Field(default_factory=default_metrics, min_length=1)
    stratify_by: str | None = "subtype"
    bootstrap_samples: int = Field(default=1000, ge=10)
    confidence: float = Field(default=0.95, gt=0.0, lt=1.0)
    bootstrap_seed: int = Field(default=0, ge=0)
    gates: list[GateConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> EvalConfig:
        names = [c.name for c in self.candidates]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise ValueError(f"candidates[{i}].name: {name!r} is used twice")
        if sum(c.baseline for c in self.candidates) > 1:
            raise ValueError("candidates: more than one candidate has `baseline: true`")
        if self.engine == "hf" and self.tensor_parallel > 1:
            raise ValueError("tensor_parallel: the hf engine runs on one device; use engine: vllm")
        if self.beam_width > 1 and self.temperature > 0:
            # transformers would sample inside its beams, vLLM's beam search only rescales the scores:
            # the engines would answer differently (the operator refuses this pair too).
            raise ValueError("beam_width: beam search needs temperature 0")
        keys = [m.key for m in self.metrics]
        for i, key in enumerate(keys):
            if key in keys[:i]:
                raise ValueError(f"metrics[{i}].name: {key!r} is used twice (give each metric its own name)")
            if key in ANSWER_COLUMNS:
                raise ValueError(
                    f"metrics[{i}].name: {key!r} names a column of every candidate's answers; choose another"
                )
        for i, gate in enumerate(self.gates):
            if self.column_of(gate.metric) is None:
                known = ", ".join([*keys, *self.metric_columns()])
                raise ValueError(
                    f"gates[{i}].metric: {gate.metric!r} is not a metric or a metric's sub-value; known: {known}"
                )
            if gate.candidate is not None and gate.candidate not in names:
                raise ValueError(f"gates[{i}].candidate: no candidate is named {gate.candidate!r}")
            # Without `candidate` a gate tests every other candidate, or the baseline when it is alone.
            tests_baseline = gate.candidate == self.baseline.name or len(names) == 1
            if gate.relative_to_baseline and tests_baseline:
                raise ValueError(f"gates[{i}]: the baseline cannot be compared with itself")
        return self

    @property
    def baseline(self) -> CandidateConfig:
        """The candidate marked `baseline: true`, or the first one when none is marked."""
        return next((c for c in self.candidates if c.baseline), self.candidates[0])

    def column_of(self, metric: str) -> str | None:
        """The column a gate's `metric` names: a column itself, or a metric's headline column."""
        if metric in self.metric_columns():
            return metric
        return next((m.headline() for m in self.metrics if m.key == metric), None)

    def metric_columns(self) -> dict[str, MetricColumn]:
        return {column.name: column for metric in self.metrics for column in metric.columns()}


def _location(loc: tuple) -> str:
    """('metrics', 0, 'regex', 'pattern') -> 'metrics[0].pattern' (the union tag is noise)."""
    text = ""
    previous: Any = None
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif not (isinstance(previous, int) and part in METRIC_TYPES):
            text += f".{part}" if text else str(part)
        previous = part
    return text


def format_validation_error(exc: ValidationError, source: str) -> str:
    lines = []
    for error in exc.errors():
        where = _location(tuple(error["loc"]))
        message = "unknown field" if error["type"] == "extra_forbidden" else error["msg"]
        message = message.removeprefix("Value error, ")
        lines.append(f"{where}: {message}" if where else message)
    return f"{source}: " + "; ".join(lines)


def parse_config(data: Any, source: str = "config") -> EvalConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of fields, got {type(data).__name__}")
    try:
        return EvalConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def load_config(path: str | Path) -> EvalConfig:
    return parse_config(read_config_file(path), str(path))
