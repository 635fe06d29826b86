"""Local copies of stored models: the path itself for file://, a download into scratch for s3://.

A download is keyed by the content version of what S3 holds (storage.s3_version), so weights
overwritten at the same URI land in a new path and the stale copy is deleted.
"""

from __future__ import annotations

from pathlib import Path

from kubetune_trainer import storage
from kubetune_trainer.artifacts.scratch import download_once, keep_only_version
from kubetune_trainer.errors import BaseModelMissing

HF_PREFIX = "hf://"


def materialize_dir(uri: str, cache_dir: Path, field: str) -> Path:
    """A local directory holding `uri`: the path itself for file://, a download (once per node and
    content version) for s3://."""
    return materialize_versioned(uri, cache_dir, field)[0]


def materialize_versioned(uri: str, cache_dir: Path, field: str) -> tuple[Path, str | None]:
    """`materialize_dir`, with the content version (storage.s3_version) of what it downloaded;
    None for file://."""
    loc = storage.parse(uri)
    if loc.scheme == "file":
        return Path(loc.path), None
    key = Path(loc.path.rstrip("/"))
    version = storage.s3_version(uri)
    if version is None:
        raise BaseModelMissing(f"{field}: {uri}: no objects under this prefix")
    # Other storage errors stay StorageError: they may pass, and that exit code is retried.
    target = cache_dir / "downloads" / loc.bucket / key.parent / f"{key.name}@{version}"
    download_once(uri, target)
    keep_only_version(target)
    return target, version


def materialize(uri: str, cache_dir: Path, field: str = "model") -> str:
    """A local path (or, for hf://, a hub name) that from_pretrained and vLLM can load."""
    if uri.startswith(HF_PREFIX):
        return uri.removeprefix(HF_PREFIX)
    return str(materialize_dir(uri, cache_dir, field))
