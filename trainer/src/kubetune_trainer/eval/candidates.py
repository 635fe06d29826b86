"""Candidates and their lineage: which base each one runs on, checked against `kubetune.json`.

An adapter's true base is `baseModel` with `mergedAdapters` merged in order (docs/contracts.md
§6). With `model` omitted, evaluation builds exactly that base. With `model` given, it must be
that base: the original base model itself when the chain is empty, or a job's `merged/` model
that is exactly base + chain. Anything else — the seed-003 pitfall of putting a DPO adapter
trained on base+SFT onto the bare base — is refused.

A job's `merged/kubetune.json` is the job's own lineage with `"type": "merged"`: it records the
true base of the job's adapter, and the merged model is that base plus the adapter in the
sibling `final/` directory.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubetune_trainer import storage
from kubetune_trainer.artifacts.lineage import (
    ADAPTER_WEIGHTS,
    LINEAGE_FILE,
    MergedAdapter,
    TrueBase,
    normalize_model_uri,
    recorded_base_version,
)
from kubetune_trainer.artifacts.materialize import HF_PREFIX, materialize
from kubetune_trainer.artifacts.scratch import keep_only_version
from kubetune_trainer.errors import AdapterBaseMismatch, BaseModelMissing, ConfigError, DataError
from kubetune_trainer.eval.config import CandidateConfig

log = logging.getLogger(__name__)


@dataclass
class Candidate:
    name: str
    baseline: bool
    kind: str  # "model", "merged", "full" or "adapter"
    base: TrueBase
    adapter: str | None = None
    verified: bool = True
    lineage: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "baseline": self.baseline,
            "kind": self.kind,
            "adapter": self.adapter,
            "runsOn": self.base.to_json(),
            # As the adapter's kubetune.json records it; `runsOn` is what was loaded to match it.
            "trueBase": (
                {key: self.lineage.get(key) for key in ("baseModel", "mergedAdapters")}
                if self.kind == "adapter" and self.lineage
                else None
            ),
            "verified": self.verified,
            "lineage": self.lineage,
            "warnings": self.warnings,
        }


def read_json_file(uri: str) -> dict[str, Any] | None:
    """A JSON object stored at `uri`, or None when there is no such file."""
    if uri.startswith(HF_PREFIX) or not storage.exists(uri):
        return None
    try:
        data = json.loads(storage.read_text(uri))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{uri}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DataError(f"{uri}: expected a JSON object")
    return data


def merged_identity(model_uri: str, lineage: dict[str, Any]) -> TrueBase:
    """A job's merged model: the true base its lineage records plus the job's own final/ adapter."""
    recorded = TrueBase.from_json(lineage, storage.join(model_uri, LINEAGE_FILE))
    parent, _, leaf = model_uri.rpartition("/")
    final = f"{parent}/final"
    if recorded.merged_adapters and recorded.merged_adapters[-1].uri == final:
        return recorded
    if leaf != "merged" or not storage.exists(storage.join(final, ADAPTER_WEIGHTS)):
        # What was merged in is unknown, so the model can only stand for itself.
        return TrueBase(model_uri)
    digest = hashlib.sha256(storage.read_bytes(storage.join(final, ADAPTER_WEIGHTS))).hexdigest()
    return TrueBase(recorded.base_model, (*recorded.merged_adapters, MergedAdapter(final, digest)))


def model_identity(model_uri: str) -> tuple[TrueBase, str, dict[str, Any] | None]:
    """What a model directory is: itself, or (for a job's merged model) base + every adapter merged in."""
    model_uri = normalize_model_uri(model_uri)
    if model_uri.startswith(HF_PREFIX):
        return TrueBase(model_uri), "model", None
    if not storage.exists(storage.join(model_uri, "config.json")):
        raise BaseModelMissing(f"{model_uri}: no model there (config.json not found)")
    lineage = read_json_file(storage.join(model_uri, LINEAGE_FILE))
    kind = lineage.get("type") if lineage else None
    if kind == "merged":
        return merged_identity(model_uri, lineage), "merged", lineage
    return TrueBase(model_uri), "full" if kind == "full" else "model", lineage


def resolve_candidate(config: CandidateConfig, index: int, baseline: bool) -> Candidate:
    where = f"candidates[{index}] ({config.name})"
    if config.adapter is None:
        assert config.model is not None
        # A model runs as it is; what it was built from is only shown in the report.
        _, kind, lineage = model_identity(config.model)
        return Candidate(
            config.name, baseline, kind, TrueBase(normalize_model_uri(config.model)), lineage=lineage
        )

    adapter = normalize_model_uri(config.adapter)
    if adapter.startswith(HF_PREFIX):
        raise ConfigError(f"{where}.adapter: adapters are read from file:// or s3://, not {adapter}")
    adapter_config = read_json_file(storage.join(adapter, "adapter_config.json"))
    if adapter_config is None:
        raise ConfigError(f"{where}.adapter: no adapter at {adapter} (adapter_config.json not found)")
    lineage_uri = storage.join(adapter, LINEAGE_FILE)
    lineage = read_json_file(lineage_uri)

    given = loaded = None
    if config.model is not None:
        # A named model is loaded as it is; what it was built from (its identity) is what gets checked.
        given = model_identity(config.model)[0]
        loaded = TrueBase(normalize_model_uri(config.model))

    if lineage is None:
        recorded = adapter_config.get("base_model_name_or_path")
        if loaded is None:
            raise ConfigError(
                f"{where}.model: adapter {adapter} has no {LINEAGE_FILE}, so its base is unknown "
                f"(adapter_config.json says {recorded!r}); name the base model with `model`"
            )
        warning = (
            f"{config.name}: adapter {adapter} has no {LINEAGE_FILE}; it was loaded onto {loaded.describe()} "
            f"as configured, which could not be verified (adapter_config.json says {recorded!r})"
        )
        log.warning(warning)
        return Candidate(
            config.name, baseline, "adapter", loaded, adapter, verified=False, warnings=[warning]
        )

    needed = TrueBase.from_json(lineage, lineage_uri)
    if loaded is None or loaded.base_model == needed.base_model:
        check_base_unchanged(lineage, needed.base_model, where, adapter)
    if given is not None and loaded is not None:
        # The recorded base itself (a job trained on another job's merged/ records that directory),
        # or a model built as exactly that base.
        if not (loaded.same_as(needed) or given.same_as(needed)):
            raise AdapterBaseMismatch(
                f"{where}: adapter {adapter} was trained on {needed.describe()}, but `model` is "
                f"{given.describe()}. Omit `model` to evaluate the adapter on its true base, or name the "
                "merged/ model of the job that built that base."
            )
        return Candidate(config.name, baseline, "adapter", loaded, adapter, lineage=lineage)
    model_identity(needed.base_model)
    for merged in needed.merged_adapters:
        if read_json_file(storage.join(merged.uri, "adapter_config.json")) is None:
            raise AdapterBaseMismatch(
                f"{where}: the adapter's base chain needs {merged.uri}, but no adapter is there"
            )
    return Candidate(config.name, baseline, "adapter", needed, adapter, lineage=lineage)


def check_base_unchanged(lineage: dict[str, Any], base_uri: str, where: str, adapter: str) -> None:
    """Refuse an adapter whose s3:// base was overwritten in place after training: the same URI
    would load other weights, and the scores would belong to a model nobody trained."""
    recorded = recorded_base_version(lineage)
    if recorded is None or not base_uri.startswith("s3://"):
        return
    current = storage.s3_version(base_uri)
    if current is not None and current != recorded:
        raise AdapterBaseMismatch(
            f"{where}: adapter {adapter} was trained on {base_uri} as it was then (content {recorded}); "
            f"the objects there have changed since (now {current}). Retrain the adapter on the new "
            "weights, or put the old ones back."
        )


def resolve_candidates(configs: list[CandidateConfig], baseline_name: str) -> list[Candidate]:
    return [resolve_candidate(c, i, c.name == baseline_name) for i, c in enumerate(configs)]


def build_base(base: TrueBase, cache_dir: Path) -> str:
    """A loadable directory holding exactly `base`: merges the chain when there is one."""
    model_path = materialize(base.base_model, cache_dir, "baseModel")
    if not base.merged_adapters:
        return model_path
    adapter_paths = [Path(materialize(a.uri, cache_dir, "mergedAdapters")) for a in base.merged_adapters]
    # Keyed by the local paths too, not the URIs alone: an s3:// model overwritten in place
    # downloads to a new path, so a merge of the old weights is never taken for the new ones.
    paths = json.dumps([model_path, *map(str, adapter_paths)])
    target = cache_dir / "merged-bases" / f"{base.key}@{hashlib.sha256(paths.encode()).hexdigest()[:16]}"
    if (target / "COMPLETE").exists():
        return str(target)
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype="auto")
    for merged, adapter_path in zip(base.merged_adapters, adapter_paths, strict=True):
        weights = adapter_path / ADAPTER_WEIGHTS
        if not weights.is_file():
            raise AdapterBaseMismatch(
                f"{merged.uri}: the base chain needs this adapter, but {ADAPTER_WEIGHTS} is missing"
            )
        if merged.sha256 and storage.sha256_file(weights) != merged.sha256:
            raise AdapterBaseMismatch(
                f"{merged.uri}: {ADAPTER_WEIGHTS} has changed since the adapter that names it in its base "
                f"chain was trained (sha256 differs from {merged.sha256}); its true base cannot be rebuilt"
            )
        with torch.no_grad():
            model = PeftModel.from_pretrained(model, str(adapter_path)).merge_and_unload()
    partial = target.with_name(target.name + ".partial")
    model.save_pretrained(partial)
    AutoTokenizer.from_pretrained(model_path).save_pretrained(partial)
    (partial / "COMPLETE").write_text(base.describe() + "\n")
    partial.replace(target)
    keep_only_version(target)
    return str(target)
