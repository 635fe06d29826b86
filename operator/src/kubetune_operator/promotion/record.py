"""The promotion record: which adapter serves under which name, and the evidence that let it.

The operator builds one with `build_record` from what it keeps in statuses (the EvalRun's summary,
the FineTuneJob's artifact and true base) and renders it into the promote Job's ConfigMap as
`record.json`; `kubetune promote` commits it as `<path>/adapters/<name>/promotion.yaml`.
Keys are camelCase like the resources they come from; `schemaVersion` guards the format.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from kubetune_operator.promotion.errors import PromotionRefused

SCHEMA_VERSION = 1

# The adapter name is vLLM's served model name, a directory and part of ConfigMap keys: DNS-1123 label.
ADAPTER_NAME_PATTERN = r"^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$"
AdapterName = Annotated[str, StringConstraints(pattern=ADAPTER_NAME_PATTERN)]
Uri = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9+.-]*://\S+$")]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
NonEmpty = Annotated[str, StringConstraints(min_length=1)]
Action = Literal["promote", "rollback", "withdraw"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)


class _Open(BaseModel):
    """Passed through from the eval summary: fields the trainer adds later are kept, not refused."""

    model_config = ConfigDict(extra="allow", alias_generator=to_camel, populate_by_name=True)


class MergedAdapter(_Strict):
    uri: Uri
    sha256: Sha256 | None = None


class TrueBase(_Strict):
    """`baseModel` with `mergedAdapters` merged in order: the model the adapter was trained on."""

    base_model: Uri
    merged_adapters: list[MergedAdapter] = []


class ResourceRef(_Strict):
    namespace: NonEmpty
    name: NonEmpty


class EvalRunRef(ResourceRef):
    uid: NonEmpty


class Adapter(_Strict):
    name: AdapterName
    uri: Uri
    sha256: Annotated[dict[NonEmpty, Sha256], Field(min_length=1)]
    true_base: TrueBase
    rank: Annotated[int, Field(ge=1)] | None = None
    fine_tune_job: ResourceRef | None = None


class Gate(_Open):
    name: NonEmpty
    metric: NonEmpty
    candidate: str | None = None
    value: float | None = None
    threshold: float
    comparator: Literal[">=", ">", "<=", "<"]
    passed: bool

    def describe(self) -> str:
        return f"{self.name} ({self.metric} {self.comparator} {self.threshold}, got {self.value})"


class MetricValue(_Open):
    value: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None


class EvalRunResult(EvalRunRef):
    candidate: NonEmpty
    passed: bool
    gates: list[Gate]
    metrics: dict[str, dict[str, MetricValue]] = {}
    report: Uri | None = None


class Rollback(_Strict):
    replaces: EvalRunRef
    restores: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{40,64}$")] | None = None
    reason: str | None = None


class PromotionRecord(_Strict):
    """`action` says what the record does to serving: `promote` and `rollback` serve `adapter`,
    `withdraw` stops serving it; `rollback` says which promotion it undid and which it restored."""

    schema_version: Literal[1]
    action: Action
    adapter: Adapter
    eval_run: EvalRunResult
    rollback: Rollback | None = None

    @model_validator(mode="after")
    def _rollback_matches_action(self) -> PromotionRecord:
        if (self.action == "promote") != (self.rollback is None):
            wanted = "has no" if self.action == "promote" else "needs a"
            raise ValueError(f"a record with action {self.action!r} {wanted} 'rollback' section")
        return self

    @property
    def serves(self) -> bool:
        return self.action != "withdraw"

    def document(self) -> dict[str, Any]:
        """The JSON-able form written to record.json and promotion.yaml."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def _field_path(location: Sequence[int | str]) -> str:
    path = ""
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(document)"


def parse_record(data: Any, source: str) -> PromotionRecord:
    """Validate a record document; errors name `source` and every bad field."""
    if not isinstance(data, Mapping):
        raise PromotionRefused(f"{source}: a promotion record must be a mapping, not {type(data).__name__}")
    version = data.get("schemaVersion")
    if version is not None and version != SCHEMA_VERSION:
        raise PromotionRefused(
            f"{source}: schemaVersion {version!r} is not supported; this kubetune reads and writes {SCHEMA_VERSION}"
        )
    try:
        return PromotionRecord.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{_field_path(err['loc'])}: {err['msg']}" for err in exc.errors())
        raise PromotionRefused(f"{source}: {problems}") from None


def load_record(path: Path) -> PromotionRecord:
    """Read a `record.json` (what the operator renders into the promote Job's ConfigMap)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PromotionRefused(
            f"record file {path}: cannot be read ({exc.__class__.__name__}: {exc})"
        ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PromotionRefused(f"{path} line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    return parse_record(data, str(path))


def load_record_yaml(text: bytes, source: str) -> PromotionRecord:
    """Read a `promotion.yaml` from the repository."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise PromotionRefused(f"{source}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    return parse_record(data, source)


def require_passed_gates(record: PromotionRecord) -> None:
    """Refuse to promote anything an EvalRun did not let through."""
    run = record.eval_run
    who = f"EvalRun {run.namespace}/{run.name}"
    failed = [gate.describe() for gate in run.gates if not gate.passed]
    if failed:
        raise PromotionRefused(f"{who} failed its gates: {'; '.join(failed)}. Nothing is promoted.")
    if not run.passed:
        raise PromotionRefused(f"{who} did not pass. Nothing is promoted.")
    if not run.gates:
        raise PromotionRefused(f"{who} has no gates; promotion needs at least one gate that passed.")
    if run.metrics and run.candidate not in run.metrics:
        raise PromotionRefused(
            f"{who} has no metrics for candidate {run.candidate!r} (it has {', '.join(sorted(run.metrics))})"
        )


def _without_none(**fields: Any) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if value is not None}


def build_record(
    *,
    adapter_name: str,
    candidate: str,
    eval_run: Mapping[str, str],
    eval_summary: Mapping[str, Any],
    adapter: Mapping[str, Any],
    true_base: Mapping[str, Any],
    fine_tune_job: Mapping[str, str] | None = None,
    lora_rank: int | None = None,
) -> dict[str, Any]:
    """The promotion record for `candidate` of an EvalRun whose gates passed, as a JSON-able dict.

    - `eval_run`: `{"namespace", "name", "uid"}` of the EvalRun (the uid makes promotion idempotent).
    - `eval_summary`: the eval pod's termination summary (contracts §5): `passed`, `gates`, `metrics`, `report`.
    - `adapter`: the FineTuneJob's `artifact` (`uri`, `sha256` map, `type`); `true_base`: its `trueBase`
      (`baseModel`, `mergedAdapters`); `fine_tune_job`: `{"namespace", "name"}`; `lora_rank`: its `lora_r`.

    Raises PromotionRefused, naming the reason, when a gate failed or a field is missing or malformed.
    """
    artifact_type = adapter.get("type", "adapter")
    if artifact_type != "adapter":
        raise PromotionRefused(
            f"candidate {candidate!r} is a {artifact_type} model, not an adapter: "
            "only LoRA adapters can be promoted to multi-LoRA serving"
        )
    document = {
        "schemaVersion": SCHEMA_VERSION,
        "action": "promote",
        "adapter": _without_none(
            name=adapter_name,
            uri=adapter.get("uri"),
            sha256=adapter.get("sha256"),
            trueBase=_without_none(
                baseModel=true_base.get("baseModel"), mergedAdapters=true_base.get("mergedAdapters")
            ),
            rank=lora_rank,
            fineTuneJob=dict(fine_tune_job) if fine_tune_job is not None else None,
        ),
        "evalRun": _without_none(
            namespace=eval_run.get("namespace"),
            name=eval_run.get("name"),
            uid=eval_run.get("uid"),
            candidate=candidate,
            passed=eval_summary.get("passed"),
            gates=eval_summary.get("gates"),
            metrics=eval_summary.get("metrics"),
            report=eval_summary.get("report"),
        ),
    }
    record = parse_record(
        document, f"promotion record for EvalRun {eval_run.get('namespace')}/{eval_run.get('name')}"
    )
    require_passed_gates(record)
    return record.document()
