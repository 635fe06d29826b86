"""Checkpoints in the artifact store: `<output>/checkpoints/checkpoint-<step:06d>/` + `COMPLETE`.

The HF Trainer writes checkpoints to a local scratch directory; each one is then uploaded and
counts only once its `COMPLETE` marker, written after every other file, is there. The marker names
the run (config, true base and dataset) that wrote it, and the tracker runs (MLflow, W&B) it logged
to, so that a start resuming from it logs to them again. A new start resumes from the newest complete
checkpoint of its own run, so neither a half-uploaded one (a pod killed mid-upload) nor one of an
earlier, different job in the same output is ever loaded. Pruning keeps the newest
`save_total_limit` complete checkpoints plus the best one.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from kubetune_trainer import storage
from kubetune_trainer.artifacts.scratch import download_once

COMPLETE = "COMPLETE"
CHECKPOINTS = "checkpoints"
_NAME = re.compile(r"^checkpoint-(\d+)$")


@dataclass(frozen=True)
class Checkpoint:
    step: int
    uri: str
    complete: bool


def checkpoint_uri(output: str, step: int) -> str:
    return storage.join(output, CHECKPOINTS, f"checkpoint-{step:06d}")


def list_checkpoints(output: str) -> list[Checkpoint]:
    """Every checkpoint under `output`, oldest first."""
    root = storage.join(output, CHECKPOINTS)
    found: dict[int, bool] = {}
    for file_uri in storage.list_files(root):
        parts = storage.relative(root, file_uri).split("/")
        match = _NAME.match(parts[0])
        if match:
            step = int(match.group(1))
            found[step] = found.get(step, False) or parts[1:] == [COMPLETE]
    return [
        Checkpoint(step, checkpoint_uri(output, step), complete) for step, complete in sorted(found.items())
    ]


def latest_complete(output: str) -> Checkpoint | None:
    complete = [c for c in list_checkpoints(output) if c.complete]
    return complete[-1] if complete else None


def upload_files(local_dir: Path, uri: str) -> None:
    """Everything but the marker; several nodes may each upload their own ZeRO shards."""
    storage.upload_dir(local_dir, uri, last=(COMPLETE,))


def mark_complete(uri: str, step: int, run: str, tracking: dict[str, str] | None = None) -> None:
    """`tracking`: the ids of the tracker runs logged to so far, which a start resuming from this
    checkpoint logs to again (ids only: never an endpoint or a credential)."""
    marker = {"step": step, "run": run, "completedAt": datetime.now(UTC).isoformat(timespec="seconds")}
    if tracking:
        marker["tracking"] = tracking
    storage.write_text(storage.join(uri, COMPLETE), json.dumps(marker) + "\n")


def marker_of(checkpoint: Checkpoint) -> dict:
    """What `checkpoint`'s COMPLETE marker says; empty when it cannot be read as an object.

    A failing store raises (every rank must decide alike whether to resume, or none goes on).
    """
    try:
        marker = json.loads(storage.read_text(storage.join(checkpoint.uri, COMPLETE)))
    except ValueError:
        return {}
    return marker if isinstance(marker, dict) else {}


def run_of(checkpoint: Checkpoint) -> str | None:
    """The run that completed `checkpoint`, as its marker says; None when the marker names none."""
    return marker_of(checkpoint).get("run")


def delete(checkpoint: Checkpoint) -> None:
    # The marker goes first: a reader must never find a COMPLETE checkpoint with files missing.
    storage.delete_file(storage.join(checkpoint.uri, COMPLETE))
    storage.delete_tree(checkpoint.uri)


def delete_all(output: str) -> list[int]:
    """Delete every checkpoint (a new run must not mix its checkpoints with an earlier run's)."""
    found = list_checkpoints(output)
    for checkpoint in found:
        delete(checkpoint)
    return [c.step for c in found]


def prune(output: str, keep: int, protect: int | None) -> list[int]:
    """Delete all but the newest `keep` complete checkpoints (and `protect`); returns the deleted steps.

    Incomplete checkpoints older than the newest complete one are leftovers of an interrupted
    upload and go too; a newer incomplete one may still be uploading on another node.
    """
    checkpoints = list_checkpoints(output)
    complete = [c for c in checkpoints if c.complete]
    kept = {c.step for c in complete[-keep:]} | ({protect} if protect is not None else set())
    newest = complete[-1].step if complete else -1
    deleted = []
    for checkpoint in checkpoints:
        stale = not checkpoint.complete and checkpoint.step < newest
        if (checkpoint.complete and checkpoint.step not in kept) or stale:
            delete(checkpoint)
            deleted.append(checkpoint.step)
    return deleted


def download(checkpoint: Checkpoint, local_root: Path) -> Path:
    """The HF Trainer's name for it (`checkpoint-<step>`) under local_root."""
    return download_once(checkpoint.uri, local_root / f"checkpoint-{checkpoint.step}")


def best_by_eval_loss(log_history: list[dict], steps: list[int]) -> tuple[int, float] | None:
    """The checkpoint step with the lowest eval loss logged at that step, among `steps`."""
    losses = {
        entry["step"]: entry["eval_loss"]
        for entry in log_history
        if isinstance(entry.get("eval_loss"), int | float) and math.isfinite(entry["eval_loss"])
    }
    scored = [(losses[step], step) for step in steps if step in losses]
    if not scored:
        return None
    loss, step = min(scored)
    return step, float(loss)
