"""TrainerCallbacks: progress to the operator, checkpoints to the artifact store, SIGTERM handling."""

from __future__ import annotations

import json
import logging
import signal
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from kubetune_trainer import storage
from kubetune_trainer.artifacts.lineage import Lineage
from kubetune_trainer.errors import Preempted
from kubetune_trainer.progress import ProgressReporter, metrics
from kubetune_trainer.recipes import checkpoints
from kubetune_trainer.recipes.distributed import World, any_rank, barrier
from kubetune_trainer.recipes.tracking import TrackedRuns

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
# HF's log keys -> progress event keys (contracts §4).
LOG_KEYS = {
    "loss": "loss",
    "eval_loss": "eval_loss",
    "learning_rate": "learning_rate",
    "epoch": "epoch",
    "rewards/margins": "reward_margin",
    "rewards/accuracies": "reward_accuracy",
}


def write_metrics_history(history: list[dict[str, Any]], path: Path) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for entry in history:
            handle.write(json.dumps(entry, ensure_ascii=False) + "\n")


class ProgressCallback(TrainerCallback):
    """Step, total, ETA, loss, reward margin/accuracy and tokens/s to the operator and the gauges."""

    def __init__(self, reporter: ProgressReporter):
        self.reporter = reporter
        self.started = 0.0
        self.first_step = 0
        self.last_time = 0.0
        self.last_tokens = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = self.last_time = time.monotonic()
        self.first_step = state.global_step
        self.last_tokens = state.num_input_tokens_seen
        self.reporter.update(phase="train", step=state.global_step, total_steps=state.max_steps, force=True)

    def _timing(self, state) -> dict[str, float]:
        now = time.monotonic()
        fields: dict[str, float] = {}
        done = state.global_step - self.first_step
        if done > 0 and state.max_steps:
            fields["eta_seconds"] = round(
                (now - self.started) / done * (state.max_steps - state.global_step), 1
            )
        if now > self.last_time and state.num_input_tokens_seen > self.last_tokens:
            fields["tokens_per_second"] = round(
                (state.num_input_tokens_seen - self.last_tokens) / (now - self.last_time), 1
            )
            # The count is the whole job's (gathered across ranks): one process counts it, once.
            if state.is_world_process_zero:
                metrics().tokens_total.inc(state.num_input_tokens_seen - self.last_tokens)
        self.last_time, self.last_tokens = now, state.num_input_tokens_seen
        return fields

    def on_step_end(self, args, state, control, **kwargs):
        # The last step is always logged, so a run shorter than logging_steps still reports its loss.
        if state.max_steps and state.global_step >= state.max_steps:
            control.should_log = True
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        fields: dict[str, Any] = {ours: logs[theirs] for theirs, ours in LOG_KEYS.items() if theirs in logs}
        percent = 100.0 * state.global_step / state.max_steps if state.max_steps else None
        self.reporter.update(
            phase="train",
            step=state.global_step,
            total_steps=state.max_steps,
            percent=round(percent, 2) if percent is not None else None,
            **fields,
            **self._timing(state),
            force="eval_loss" in logs,
        )
        self._gpu_memory()

    @staticmethod
    def _gpu_memory() -> None:
        import torch

        if torch.cuda.is_available():
            device = torch.cuda.current_device()
            metrics().gpu_memory.labels(gpu=str(device)).set(torch.cuda.max_memory_allocated(device))


class CheckpointPublisher(TrainerCallback):
    """Uploads each local checkpoint, marks it COMPLETE (naming the run and its tracker runs) after
    every rank's files are up, prunes old ones."""

    def __init__(
        self,
        output: str,
        world: World,
        keep: int,
        lineage: Lineage,
        run: str,
        reporter: ProgressReporter,
        tensorboard: Path | None = None,
        tracked: TrackedRuns | None = None,
    ):
        self.output = output
        self.world = world
        self.keep = keep
        self.lineage = lineage
        self.run = run
        self.reporter = reporter
        self.tensorboard = tensorboard
        self.tracked = tracked

    def on_save(self, args, state, control, **kwargs):
        local = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        uri = checkpoints.checkpoint_uri(self.output, state.global_step)
        if self.world.is_main:
            # Every checkpoint is a usable adapter: it names its true base like final/ does.
            self.lineage.write(local)
        barrier()
        if self.world.is_local_main:
            checkpoints.upload_files(local, uri)
        barrier()
        if self.world.is_main:
            tracking = self.tracked.resumable() if self.tracked else None
            checkpoints.mark_complete(uri, state.global_step, self.run, tracking)
            write_metrics_history(state.log_history, Path(args.output_dir) / METRICS_FILE)
            storage.upload_file(Path(args.output_dir) / METRICS_FILE, storage.join(self.output, METRICS_FILE))
            if self.tensorboard is not None and self.tensorboard.is_dir():
                # The curves so far, for a TensorBoard pointed at the output while training goes on.
                storage.upload_dir(self.tensorboard, storage.join(self.output, self.tensorboard.name))
            complete = [c.step for c in checkpoints.list_checkpoints(self.output) if c.complete]
            best = checkpoints.best_by_eval_loss(state.log_history, complete)
            checkpoints.prune(self.output, self.keep, protect=best[0] if best else None)
            self.reporter.update(phase="train", step=state.global_step, checkpoint=uri, force=True)
            log.info("checkpoint %s complete", uri)


class Preemption(TrainerCallback):
    """SIGTERM: the current step finishes, every rank saves a checkpoint, and the run exits 75.

    Before training starts there is nothing to save, so the signal ends the process at once; in
    the last step and after it the signal is ignored, because finishing the final save is the
    quickest way out.
    """

    def __init__(self):
        self.requested = False
        self.started = False
        self.stopped_at: int | None = None
        self._previous = None

    def install(self) -> None:
        self._previous = signal.signal(signal.SIGTERM, self._handle)

    def uninstall(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    def _handle(self, signum, frame) -> None:
        if not self.started:
            raise Preempted("SIGTERM before training started; nothing to checkpoint")
        log.warning("SIGTERM: saving a checkpoint after this step")
        self.requested = True

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = True

    def on_step_end(self, args, state, control, **kwargs):
        # All ranks must agree, or one would wait forever in the checkpoint's collectives. After
        # the last step the run saves and finishes anyway: quicker than a retry that resumes to save.
        if any_rank(self.requested, args.device) and state.global_step < state.max_steps:
            self.stopped_at = state.global_step
            control.should_save = True
            control.should_training_stop = True
        return control
