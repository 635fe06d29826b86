"""Lineage (`final/kubetune.json`, contracts §6): which base an adapter really belongs to.

A chained job (`start_from`) trains on base + every adapter of the chain merged in order. The
lineage records that "true base" so that evaluation loads an adapter onto exactly the model it was
trained on, never onto the original base (the seed-003 pitfall).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubetune_trainer import storage
from kubetune_trainer.errors import AdapterBaseMismatch, ConfigError, KubetuneError
from kubetune_trainer.recipes.config import TrainConfig

LINEAGE_FILE = "kubetune.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def normalize_model_uri(uri: str) -> str:
    """One spelling per location, so that lineages compare equal: file:///abs, s3://b/k, hf://org/name."""
    if uri.startswith("hf://"):
        return uri.rstrip("/")
    return storage.parse(uri).uri.rstrip("/")


@dataclass(frozen=True)
class MergedAdapter:
    uri: str
    sha256: str

    def to_json(self) -> dict[str, str]:
        return {"uri": self.uri, "sha256": self.sha256}


@dataclass(frozen=True)
class TrueBase:
    base_model: str
    merged_adapters: tuple[MergedAdapter, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        return {"baseModel": self.base_model, "mergedAdapters": [a.to_json() for a in self.merged_adapters]}


def read_lineage(final_uri: str) -> dict[str, Any]:
    uri = storage.join(final_uri, LINEAGE_FILE)
    try:
        text = storage.read_text(uri)
    except KubetuneError as exc:
        raise ConfigError(
            f"start_from: {final_uri} has no readable {LINEAGE_FILE} ({exc.message}); "
            "it must be the final/ output of a kubetune FineTuneJob"
        ) from exc
    try:
        lineage = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"start_from: {uri} is not JSON: {exc}") from exc
    if not isinstance(lineage, dict):
        raise ConfigError(f"start_from: {uri} must hold a JSON object")
    return lineage


def chain_from(config: TrainConfig) -> tuple[str, list[MergedAdapter]]:
    """`base_model` and the adapters to merge into it, in order, each with the sha256 on record.

    `start_from` itself comes last, with no sha256 yet: `verify_adapter` computes it on download.
    """
    base = normalize_model_uri(config.base_model)
    if not config.start_from:
        return base, []
    start = storage.parse(config.start_from).uri.rstrip("/")
    lineage = read_lineage(start)
    if lineage.get("type") != "adapter":
        raise ConfigError(
            f"start_from: {start} holds a {lineage.get('type', 'unknown')!r} model, not an adapter; "
            "use a full model as base_model instead"
        )
    recorded = lineage.get("baseModel")
    if not isinstance(recorded, str) or normalize_model_uri(recorded) != base:
        raise AdapterBaseMismatch(
            f"start_from: {start} was trained on {recorded!r} (see its {LINEAGE_FILE}), "
            f"but base_model is {base!r}; chains must keep the base of the job they start from"
        )
    merged: list[MergedAdapter] = []
    for index, entry in enumerate(lineage.get("mergedAdapters") or []):
        if not isinstance(entry, dict) or not isinstance(entry.get("uri"), str):
            raise ConfigError(f"start_from: {start}/{LINEAGE_FILE}: mergedAdapters[{index}] needs a uri")
        merged.append(MergedAdapter(entry["uri"], str(entry.get("sha256", ""))))
    return base, [*merged, MergedAdapter(start, "")]


def verify_adapter(directory: Path, uri: str, expected_sha256: str | None) -> str:
    """sha256 of an adapter's weights; AdapterBaseMismatch when it changed since the chain recorded it."""
    weights = Path(directory) / ADAPTER_WEIGHTS
    if not weights.is_file():
        raise ConfigError(f"start_from: {uri} has no {ADAPTER_WEIGHTS}; only LoRA adapters can be chained")
    digest = storage.sha256_file(weights)
    if expected_sha256 and digest != expected_sha256:
        raise AdapterBaseMismatch(
            f"{uri}/{ADAPTER_WEIGHTS} has sha256 {digest}, but the chain recorded {expected_sha256}: "
            "the adapter was replaced after a later job was trained on it"
        )
    return digest


def reference_model(config: TrainConfig) -> str | None:
    if config.method != "dpo":
        return None
    if config.precompute_ref_log_probs:
        return "base + mergedAdapters, log-probs precomputed before training"
    if config.peft == "full":
        return "base + mergedAdapters, frozen copy"
    return "base + mergedAdapters, adapter disabled"


def lineage_document(
    config: TrainConfig, true_base: TrueBase, fingerprint: str, base_version: str | None = None
) -> dict[str, Any]:
    """`base_version`: the s3:// base's content version (storage.s3_version), so that evaluation can
    refuse an adapter whose base was overwritten in place after training."""
    return {
        "type": "full" if config.peft == "full" else "adapter",
        "method": config.method,
        **true_base.to_json(),
        **({"baseModelVersion": base_version} if base_version else {}),
        "referenceModel": reference_model(config),
        "datasetFingerprint": fingerprint,
        "job": {
            "namespace": os.environ.get("KUBETUNE_NAMESPACE"),
            "name": os.environ.get("KUBETUNE_NAME"),
        },
    }


def write_lineage(directory: Path, document: dict[str, Any]) -> None:
    Path(directory, LINEAGE_FILE).write_text(
        json.dumps(document, indent=2, ensure_ascii=False) + "\n", "utf-8"
    )
