"""Local copies of stored models: the path itself for file://, for s3:// the copy in the shared model
cache (`KUBETUNE_MODEL_CACHE`, spec.pod.modelCache) when there is one, else a download into scratch.

A download is keyed by the content version of what S3 holds (storage.s3_version), so weights
overwritten at the same URI land in a new path and the stale copy is deleted.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from kubetune_trainer import storage
from kubetune_trainer.artifacts.scratch import download_once, is_done, keep_only_version
from kubetune_trainer.errors import BaseModelMissing

HF_PREFIX = "hf://"
# How long a pod waits for another pod's download into the shared model cache (a 70B base takes a while).
SHARED_WAIT_S = 3600.0
SHARED_POLL_S = 5.0

log = logging.getLogger(__name__)


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
    relative = Path(loc.bucket) / key.parent / f"{key.name}@{version}"
    shared = shared_copy(uri, relative)
    if shared is not None:
        return shared, version
    target = cache_dir / "downloads" / relative
    download_once(uri, target)
    keep_only_version(target)
    return target, version


def shared_copy(uri: str, relative: Path) -> Path | None:
    """The model in the shared cache (`KUBETUNE_MODEL_CACHE`, a ReadWriteMany volume) when it is there;
    when it is not and the cache is writable, downloaded into it by one pod while the others wait for
    it (a lock file; one older than SHARED_WAIT_S is a dead pod's, and is taken over). None: download
    privately (no cache, a read-only one without the model, or a wait that timed out)."""
    root = os.environ.get("KUBETUNE_MODEL_CACHE")
    if not root:
        return None
    target = Path(root) / relative
    if is_done(target):
        log.info("%s: read from the shared model cache %s", uri, target)
        return target
    if os.environ.get("KUBETUNE_MODEL_CACHE_READ_ONLY") or not os.access(root, os.W_OK):
        return None
    lock = target.with_name(target.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + SHARED_WAIT_S
    while True:
        try:
            os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            break
        except FileExistsError:
            if is_done(target):
                return target
            if _age(lock) > SHARED_WAIT_S:
                lock.unlink(missing_ok=True)
            elif time.monotonic() > deadline:
                log.warning("%s: waited %.0f s for another pod's download into %s; downloading privately",
                            uri, SHARED_WAIT_S, target)
                return None
            time.sleep(SHARED_POLL_S)
    try:
        log.info("%s: downloading into the shared model cache %s", uri, target)
        download_once(uri, target)
        keep_only_version(target)
        return target
    finally:
        lock.unlink(missing_ok=True)


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def materialize(uri: str, cache_dir: Path, field: str = "model") -> str:
    """A local path (or, for hf://, a hub name) that from_pretrained and vLLM can load."""
    if uri.startswith(HF_PREFIX):
        return uri.removeprefix(HF_PREFIX)
    return str(materialize_dir(uri, cache_dir, field))
