"""Lineage (`kubetune.json`, contracts §6): which base an adapter really belongs to.

A chained job (`start_from`) trains on base + every adapter of the chain merged in order. The
lineage records that "true base" so that evaluation loads an adapter onto exactly the model it was
trained on, never onto the original base (the seed-003 pitfall). Training writes it and evaluation
reads it through the one model below.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubetune_trainer import storage
from kubetune_trainer.errors import DataError

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
    # Of its adapter_model.safetensors; None until known (the adapter a job starts from, before download).
    sha256: str | None = None

    def same_as(self, other: MergedAdapter) -> bool:
        if self.sha256 and other.sha256:
            return self.sha256 == other.sha256
        return self.uri == other.uri

    def to_json(self) -> dict[str, str | None]:
        return {"uri": self.uri, "sha256": self.sha256}


@dataclass(frozen=True)
class TrueBase:
    """A model as a base model URI plus the adapters merged into it, in order."""

    base_model: str
    merged_adapters: tuple[MergedAdapter, ...] = ()

    def same_as(self, other: TrueBase) -> bool:
        return (
            self.base_model == other.base_model
            and len(self.merged_adapters) == len(other.merged_adapters)
            and all(a.same_as(b) for a, b in zip(self.merged_adapters, other.merged_adapters, strict=True))
        )

    def describe(self) -> str:
        return " + ".join([self.base_model, *(a.uri for a in self.merged_adapters)])

    @property
    def key(self) -> str:
        """Stable identity, used to share one engine among candidates on the same base."""
        text = json.dumps([self.base_model, [[a.uri, a.sha256] for a in self.merged_adapters]])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_json(self) -> dict[str, Any]:
        return {"baseModel": self.base_model, "mergedAdapters": [a.to_json() for a in self.merged_adapters]}

    @classmethod
    def from_json(cls, document: dict[str, Any], where: str) -> TrueBase:
        """The `baseModel` and `mergedAdapters` of a lineage document, URIs normalized; DataError
        naming `where` and the field when they are missing or malformed."""
        base = document.get("baseModel")
        chain = document.get("mergedAdapters") or []
        if not isinstance(base, str) or not base:
            raise DataError(f"{where}: `baseModel` is missing")
        if not isinstance(chain, list) or not all(
            isinstance(a, dict) and isinstance(a.get("uri"), str) for a in chain
        ):
            raise DataError(f"{where}: `mergedAdapters` must be a list of {{uri, sha256}} objects")
        return cls(
            normalize_model_uri(base),
            tuple(MergedAdapter(normalize_model_uri(a["uri"]), a.get("sha256")) for a in chain),
        )


@dataclass(frozen=True)
class Lineage:
    """`kubetune.json` of a job's `final/` (type `adapter` or `full`) or `merged/` (type `merged`)."""

    type: str
    method: str
    true_base: TrueBase
    # s3:// bases only: the content version (storage.s3_version) the job trained on, so that
    # evaluation can refuse an adapter whose base was overwritten in place after training.
    base_model_version: str | None
    reference_model: str | None
    dataset_fingerprint: str
    job: dict[str, str | None]

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "method": self.method,
            **self.true_base.to_json(),
            **({"baseModelVersion": self.base_model_version} if self.base_model_version else {}),
            "referenceModel": self.reference_model,
            "datasetFingerprint": self.dataset_fingerprint,
            "job": self.job,
        }

    def write(self, directory: Path) -> None:
        Path(directory, LINEAGE_FILE).write_text(
            json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n", "utf-8"
        )


def recorded_base_version(document: dict[str, Any]) -> str | None:
    """The `baseModelVersion` a lineage document records, None when it records none."""
    version = document.get("baseModelVersion")
    return version if isinstance(version, str) else None
