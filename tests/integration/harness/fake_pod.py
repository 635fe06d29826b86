"""A stand-in container: reports progress and a termination summary like a trainer pod, then exits.

    python fake_pod.py '{"<resource name>" or "*": behaviour}'

The pod picks its behaviour by KUBETUNE_NAME (the resource it works for), else "*":
{"summary": {...}, "exit": 0, "progress": [event, ...],
            "hold": true (wait for SIGTERM: write a checkpoint, exit 75 like a preempted trainer),
            "state": DIR (checkpoints survive the pod here; a pod that finds one resumes from it),
            "checkpoint_seconds": N (writing the checkpoint on SIGTERM takes this long),
            "seconds": N (run this long before finishing)}
It uses the trainer's own progress channel and summary writer, so the operator sees real traffic.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

from kubetune_trainer.progress import ProgressReporter, write_termination_summary


def main() -> int:
    behaviours = json.loads(sys.argv[1])
    behaviour = behaviours.get(os.environ.get("KUBETUNE_NAME", ""), behaviours.get("*"))
    summary = dict(behaviour.get("summary") or {})
    reporter = ProgressReporter.from_env()
    state = Path(behaviour["state"]) if behaviour.get("state") else None
    checkpoint = state / "checkpoint" if state else None
    if checkpoint is not None and checkpoint.exists():
        summary["resumedFrom"] = checkpoint.read_text()
    for event in behaviour.get("progress") or []:
        reporter.update(force=True, **event)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    if behaviour.get("hold") and not summary.get("resumedFrom"):
        if state is not None:
            (state / "started").write_text("1")
        stopped.wait()
    elif behaviour.get("seconds"):
        stopped.wait(behaviour["seconds"])
    if stopped.is_set():
        time.sleep(behaviour.get("checkpoint_seconds", 0))
        if checkpoint is not None:
            checkpoint.write_text("s3://checkpoints/checkpoint-000002")
        write_termination_summary({"kind": summary.get("kind"), "error": "preempted; checkpoint written",
                                   "reason": "Preempted"})
        return 75
    write_termination_summary(summary)
    return int(behaviour.get("exit", 0))


if __name__ == "__main__":
    sys.exit(main())
