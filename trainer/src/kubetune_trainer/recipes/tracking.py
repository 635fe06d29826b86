"""Experiment tracking and training curves.

`report_to` turns on transformers' own integrations (MLflow, TensorBoard, W&B): their endpoints and
credentials come from the environment (MLFLOW_TRACKING_URI, WANDB_API_KEY, ...: in a pod from the
Secret the FineTuneJob names, never from its spec; under `kubetune run` from this machine's
environment). TensorBoard's event files are written to scratch and published under
<output>/tensorboard/ with each checkpoint and at the end. Whatever the trackers, the loss,
learning-rate and reward-margin curves are drawn from the metrics history into <output>/plots/.

A start that resumes from a checkpoint goes on logging where the stopped one did: each checkpoint's
marker records the ids of its MLflow and W&B runs, which `continuing` hands back to the integrations
(MLFLOW_RUN_ID; WANDB_RUN_ID with WANDB_RESUME=allow), and the published event files come back into
scratch beside the new ones. A fresh start has no checkpoint of its run, so it starts new runs.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from kubetune_trainer import storage
from kubetune_trainer.errors import ConfigError, KubetuneError, Preempted
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
# What a checkpoint records of the tracker runs: their ids, all a resumed start needs to log to them
# again (the endpoints and credentials stay in the environment).
RESUMED_IDS = ("mlflowRunId", "mlflowExperimentId", "wandbRunId")


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

    def resumable(self) -> dict[str, str]:
        return {key: self.runs[key] for key in RESUMED_IDS if key in self.runs}


def resumed_ids(marker: Mapping[str, Any]) -> dict[str, str]:
    """The tracker run ids a checkpoint's marker records; none from one written without trackers."""
    ids = marker.get("tracking")
    if not isinstance(ids, dict):
        return {}
    return {key: value for key, value in ids.items() if key in RESUMED_IDS and isinstance(value, str) and value}


def mlflow_run_to_continue(run_id: str | None) -> str | None:
    """`run_id` when the tracking server holds it, live, in the experiment this start logs to; else
    None (the server, the experiment or the run changed since the checkpoint): a new run."""
    if not run_id:
        return None
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        run = None
    experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME")
    if (
        run is None
        or run.info.lifecycle_stage != "active"
        # MLflow refuses to resume a run of another experiment than the one set.
        or (experiment and client.get_experiment(run.info.experiment_id).name != experiment)
    ):
        log.warning("MLflow run %s of the checkpoint is not a live run of this experiment here: starting a new run", run_id)
        return None
    return run_id


@contextmanager
def continuing(report_to: list[str], ids: Mapping[str, str], main: bool) -> Iterator[None]:
    """While the trainer is built and trains, point its integrations at the tracker runs `ids` names
    (those of the checkpoint this start resumes from; none: new runs). Rank 0 (`main`) alone logs.
    The W&B run ends with it, so a later start in the same process gets its own."""
    env: dict[str, str] = {}
    if main and "mlflow" in report_to and (run_id := mlflow_run_to_continue(ids.get("mlflowRunId"))):
        env["MLFLOW_RUN_ID"] = run_id
    if main and "wandb" in report_to and ids.get("wandbRunId"):
        # allow: the run goes on where the server holds it, and starts under this id where not.
        env |= {"WANDB_RUN_ID": ids["wandbRunId"], "WANDB_RESUME": "allow"}
    earlier = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield
    except BaseException as exc:
        if "wandb" in report_to:
            end_wandb(int(exc.exit_code) if isinstance(exc, KubetuneError) else 1, isinstance(exc, Preempted))
        raise
    else:
        if "wandb" in report_to:
            end_wandb(0, preempted=False)
    finally:
        for name, value in earlier.items():
            if value is None:
                os.environ.pop(name, None)  # MLflow removes MLFLOW_RUN_ID once it has read it
            else:
                os.environ[name] = value


def end_wandb(exit_code: int, preempted: bool) -> None:
    """Finish the W&B run, and W&B's session with it: W&B reads the environment (WANDB_RUN_ID, ...)
    once a session, and a later start in this process must read its own."""
    import wandb

    if wandb.run is not None:
        if preempted:
            wandb.run.mark_preempting()
        wandb.finish(exit_code=exit_code)
    wandb.teardown()


def restore_tensorboard(output: str, local: Path) -> None:
    """The event files the run published before it stopped, back into scratch, where the writer adds
    its own: <output>/tensorboard/ goes on holding the whole run, and the manifest lists each file."""
    published = storage.join(output, TENSORBOARD_DIR)
    if storage.list_files(published):
        storage.download_dir(published, local)


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
