"""Experiment tracking and training curves.

`report_to` turns on transformers' own integrations (MLflow, TensorBoard, W&B): their endpoints and
credentials come from the environment (MLFLOW_TRACKING_URI, WANDB_API_KEY, ...: in a pod from the
Secret the FineTuneJob names, never from its spec; under `kubetune run` from this machine's
environment). TensorBoard's event files are written to scratch and published under
<output>/tensorboard/ with each checkpoint and at the end. Whatever the trackers, the loss,
learning-rate and reward-margin curves are drawn from the metrics history into <output>/plots/.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from kubetune_trainer.errors import ConfigError
from kubetune_trainer.recipes.config import TrainConfig

log = logging.getLogger(__name__)

TENSORBOARD_DIR = "tensorboard"
PLOTS_DIR = "plots"
# tracker -> (the module transformers' integration needs, the package that brings it)
PACKAGES = {"mlflow": ("mlflow", "mlflow-skinny"), "tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb")}
# curve file -> the history keys drawn in it (train first, then eval), and its title
CURVES = {
    "loss": (("loss", "eval_loss"), "loss"),
    "learning_rate": (("learning_rate",), "learning rate"),
    "reward_margin": (("rewards/margins", "eval_rewards/margins"), "reward margin (chosen − rejected)"),
}


def prepare(config: TrainConfig, work: Path, job: Mapping[str, str | None]) -> None:
    """Check the trackers can run here and point them at scratch, the experiment and the job, before
    the trainer is built (its integrations read the environment when they start)."""
    import importlib.util

    for tracker in config.report_to:
        module, package = PACKAGES[tracker]
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"report_to: {tracker} needs the {package} package, which this trainer lacks")
    where = "(in a pod, a key of the tracking Secret; under kubetune run, this machine's environment)"
    if "mlflow" in config.report_to and not os.environ.get("MLFLOW_TRACKING_URI"):
        # Without it MLflow would log into ./mlruns in scratch, which goes with the pod.
        raise ConfigError(f"report_to: mlflow needs MLFLOW_TRACKING_URI {where}")
    offline = os.environ.get("WANDB_MODE") in ("offline", "disabled")
    if "wandb" in config.report_to and not (offline or os.environ.get("WANDB_API_KEY")):
        raise ConfigError(f"report_to: wandb needs WANDB_API_KEY {where}, or WANDB_MODE offline")
    if "tensorboard" in config.report_to:
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(work / TENSORBOARD_DIR)
    if "wandb" in config.report_to:
        os.environ.setdefault("WANDB_DIR", str(work))
        if config.tracking_project:
            os.environ["WANDB_PROJECT"] = config.tracking_project
    if "mlflow" in config.report_to:
        if config.tracking_project:
            os.environ["MLFLOW_EXPERIMENT_NAME"] = config.tracking_project
        tags = {"kubetune.method": config.method, "kubetune.base_model": config.base_model}
        if job.get("name"):
            tags["kubetune.job"] = f"{job.get('namespace') or 'default'}/{job['name']}"
        os.environ["MLFLOW_TAGS"] = json.dumps(tags)


class TrackedRuns(TrainerCallback):
    """Which tracker runs this training logs to, read once the integrations have started them (they
    start in on_train_begin, and come before this callback)."""

    def __init__(self, report_to: list[str]):
        self.report_to = report_to
        self.runs: dict[str, str] = {}

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        if "mlflow" in self.report_to:
            import mlflow

            run = mlflow.active_run()
            if run is not None:
                self.runs |= {"mlflowRunId": run.info.run_id, "mlflowExperimentId": run.info.experiment_id}
        if "wandb" in self.report_to:
            import wandb

            if wandb.run is not None:
                self.runs["wandbRunId"] = wandb.run.id
                if wandb.run.url:
                    self.runs["wandbRunUrl"] = wandb.run.url


def series(history: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = [(entry["step"], entry[key]) for entry in history if isinstance(entry.get(key), int | float)]
    return [step for step, _ in points], [value for _, value in points]


def plot_curves(history: list[dict[str, Any]], directory: Path) -> list[str]:
    """PNG curves of the history's loss, learning rate and reward margin (those it has); their names."""
    from matplotlib.figure import Figure

    from kubetune_trainer.eval.plots import plot_style

    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (keys, title) in CURVES.items():
        lines = [(key, *series(history, key)) for key in keys]
        lines = [line for line in lines if line[1]]
        if not lines:
            continue
        with plot_style():
            figure = Figure(figsize=(7.0, 4.0))
            axes = figure.subplots()
            for key, steps, values in lines:
                axes.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3,
                          label="eval" if key.startswith("eval_") else "train")
            axes.set_xlabel("step")
            axes.set_title(title)
            axes.grid(alpha=0.3)
            if len(lines) > 1:
                axes.legend()
            figure.tight_layout()
            figure.savefig(directory / f"{name}.png", dpi=100)
        written.append(name)
    return written
