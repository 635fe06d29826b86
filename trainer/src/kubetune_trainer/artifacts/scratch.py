"""The pod's scratch space (`KUBETUNE_CACHE_DIR`, an emptyDir in clusters): downloads and work dirs.

Ranks of one node share it. The node's first rank downloads while the others wait
(`main_process_first`), so a download counts as done only once its marker is written.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from kubetune_trainer import storage

DONE_MARKER = ".kubetune-done"


def cache_dir() -> Path:
    return Path(os.environ.get("KUBETUNE_CACHE_DIR") or Path(tempfile.gettempdir(), "kubetune-cache"))


def work_dir(output: str) -> Path:
    """This job's local working directory, keyed by its output URI."""
    return cache_dir() / "train" / hashlib.sha256(output.encode()).hexdigest()[:16]


def is_done(target: Path) -> bool:
    return (target / DONE_MARKER).is_file()


def mark_done(target: Path) -> None:
    (target / DONE_MARKER).write_text("", encoding="utf-8")


def download_once(uri: str, target: Path) -> Path:
    if not is_done(target):
        storage.download_dir(uri, target)
        mark_done(target)
    return target


def keep_only_version(target: Path) -> None:
    """Delete the siblings of `target` (`<name>@<version>`) that hold other versions of `<name>`:
    models are large and scratch is an emptyDir, so only the copy matching storage now stays."""
    name = target.name.rpartition("@")[0]
    for other in target.parent.iterdir():
        other_name, at, _ = other.name.rpartition("@")
        if other != target and at and other_name == name:
            shutil.rmtree(other, ignore_errors=True)
