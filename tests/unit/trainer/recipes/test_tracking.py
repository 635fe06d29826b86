"""Experiment tracking through transformers' report_to integrations, and the curves every run plots:
MLflow against a real tracking server (file store) started here, TensorBoard read back from its
event files, W&B in its offline mode (no server is reachable from tests). A preempted run resumes
into the same tracker runs; a fresh start gets new ones."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from kubetune_trainer import storage
from kubetune_trainer.errors import ConfigError, Preempted
from kubetune_trainer.recipes import tracking, train

from .conftest import losses, read_jsonl

PNG = b"\x89PNG\r\n\x1a\n"
# What the recipe sets for the trackers; monkeypatch puts each back as it was after every test.
TRACKER_ENV = ("TENSORBOARD_LOGGING_DIR", "WANDB_DIR", "WANDB_PROJECT", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_TAGS")
# What decides which run a tracker logs to: the recipe alone sets them, for a resumed start.
RUN_ENV = ("MLFLOW_RUN_ID", "WANDB_RUN_ID", "WANDB_RESUME")


@pytest.fixture(autouse=True)
def tracker_env(monkeypatch):
    for name in TRACKER_ENV + RUN_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def wandb_offline(tmp_path, monkeypatch) -> Path:
    """W&B in offline mode, writing under a directory of this test; yields its runs' directory."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    (tmp_path / "wandb-dir").mkdir()
    return tmp_path / "wandb-dir" / "wandb"


def marker(output: Path, step: int) -> dict:
    return json.loads((output / "checkpoints" / f"checkpoint-{step:06d}" / "COMPLETE").read_text())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """`mlflow server` on loopback with a file store in a temporary directory; yields its URL."""
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    # The file store is in maintenance mode in MLflow 3 and refused unless asked for.
    env = {**os.environ, "MLFLOW_ALLOW_FILE_STORE": "true"}
    log = open(root / "server.log", "wb")  # noqa: SIM115 - the server writes to it until the fixture ends
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", (root / "store").as_uri(), "--default-artifact-root", (root / "artifacts").as_uri()],
        env=env, stdout=subprocess.DEVNULL, stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def test_dpo_logs_to_mlflow_and_plots_its_curves(make_config, trainer_env, tmp_path, monkeypatch, mlflow_server):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("KUBETUNE_NAMESPACE", "team-a")
    monkeypatch.setenv("KUBETUNE_NAME", "tracked-dpo")
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    summary = train(make_config(
        "dpo", report_to=["mlflow"], tracking_project="kubetune-tests", run_name="tracked-dpo",
        per_device_train_batch_size=2, max_steps=4, save_steps=4,
    ))
    run_id = summary["tracking"]["mlflowRunId"]
    client = MlflowClient(mlflow_server)
    run = client.get_run(run_id)
    assert client.get_experiment(run.info.experiment_id).name == "kubetune-tests"
    assert run.info.run_name == "tracked-dpo"
    assert run.data.tags["kubetune.job"] == "team-a/tracked-dpo" and run.data.tags["kubetune.method"] == "dpo"
    logged = [m.value for m in client.get_metric_history(run_id, "loss")]
    assert logged == losses(read_jsonl(tmp_path / "output" / "metrics.jsonl"))
    assert len(client.get_metric_history(run_id, "rewards/margins")) == 4
    assert run.data.params["beta"] == "0.1"

    assert set(summary["plots"]) == {"loss", "learning_rate", "reward_margin"}
    for name, uri in summary["plots"].items():
        assert uri == f"file://{tmp_path}/output/plots/{name}.png"
        assert (tmp_path / "output" / "plots" / f"{name}.png").read_bytes().startswith(PNG)


def test_tensorboard_event_files_hold_the_losses(make_config, trainer_env, tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    summary = train(make_config("sft", report_to=["tensorboard"], max_steps=4, save_steps=2))
    events = tmp_path / "output" / "tensorboard"
    assert summary["tracking"] == {"tensorboard": f"file://{events}"}
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    logged = [(e.step, e.value) for e in accumulator.Scalars("train/loss")]
    history = read_jsonl(tmp_path / "output" / "metrics.jsonl")
    expected = [(e["step"], e["loss"]) for e in history if "loss" in e]
    assert [step for step, _ in logged] == [1, 2, 3, 4]
    assert [value for _, value in logged] == pytest.approx([value for _, value in expected], rel=1e-6)
    assert "train/learning_rate" in accumulator.Tags()["scalars"]
    manifest = storage.read_text(f"{tmp_path}/output/manifest.json")
    assert '"tensorboard/' in manifest  # the event files are listed with their sha256
    assert set(summary["plots"]) == {"loss", "learning_rate"}  # SFT has no reward margin


def test_wandb_offline_run(make_config, trainer_env, wandb_offline):
    summary = train(make_config("sft", report_to=["wandb"], tracking_project="kubetune-tests", max_steps=2, save_steps=2))
    run_id = summary["tracking"]["wandbRunId"]
    runs = list(wandb_offline.glob(f"offline-run-*-{run_id}"))
    assert runs and list(runs[0].glob("run-*.wandb"))


def test_a_preempted_run_resumes_into_its_mlflow_run_and_tensorboard_directory(
    make_config, trainer_env, tmp_path, monkeypatch, mlflow_server, sigterm_at_step
):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    output = tmp_path / "output"
    config = make_config(
        "sft", report_to=["mlflow", "tensorboard"], tracking_project="kubetune-resume", max_steps=6, save_steps=2
    )
    sigterm_at_step(3)
    with pytest.raises(Preempted):
        train(config)
    ids = marker(output, 3)["tracking"]
    assert set(ids) == {"mlflowRunId", "mlflowExperimentId"}  # ids alone: the server stays in the environment
    run_id = ids["mlflowRunId"]

    sigterm_at_step(None)
    summary = train(config)
    assert summary["resumedFrom"] == f"file://{output}/checkpoints/checkpoint-000003"
    assert summary["tracking"]["mlflowRunId"] == run_id
    assert "MLFLOW_RUN_ID" not in os.environ
    client = MlflowClient(mlflow_server)
    assert [run.info.run_id for run in client.search_runs([ids["mlflowExperimentId"]])] == [run_id]
    assert client.get_run(run_id).info.status == "FINISHED"
    logged = client.get_metric_history(run_id, "loss")
    assert [metric.step for metric in logged] == [1, 2, 3, 4, 5, 6]
    assert [metric.value for metric in logged] == losses(read_jsonl(output / "metrics.jsonl"))

    # Both starts' event files, in one directory, hold one curve; the manifest vouches for each file.
    events = EventAccumulator(str(output / "tensorboard"))
    events.Reload()
    assert [event.step for event in events.Scalars("train/loss")] == [1, 2, 3, 4, 5, 6]
    published = {path.name for path in (output / "tensorboard").iterdir()}
    manifest = json.loads((output / "manifest.json").read_text())
    assert len(published) == 2 and {name.removeprefix("tensorboard/") for name in manifest["files"]} >= published

    monkeypatch.setenv("KUBETUNE_TRAIN_AFRESH", "1")
    fresh = train(config)
    assert fresh["resumedFrom"] is None and fresh["tracking"]["mlflowRunId"] != run_id
    assert [metric.step for metric in client.get_metric_history(fresh["tracking"]["mlflowRunId"], "loss")] == [1, 2, 3, 4, 5, 6]
    assert [metric.step for metric in client.get_metric_history(run_id, "loss")] == [1, 2, 3, 4, 5, 6]


def test_a_preempted_run_resumes_its_wandb_run_and_a_fresh_start_gets_a_new_one(
    make_config, trainer_env, tmp_path, monkeypatch, wandb_offline, sigterm_at_step
):
    config = make_config("sft", report_to=["wandb"], tracking_project="kubetune-tests", max_steps=4, save_steps=2)
    sigterm_at_step(2)
    with pytest.raises(Preempted):
        train(config)
    ids = marker(tmp_path / "output", 2)["tracking"]
    assert set(ids) == {"wandbRunId"}
    run_id = ids["wandbRunId"]

    sigterm_at_step(None)
    resumed = train(config)
    assert resumed["resumedFrom"] is not None and resumed["tracking"]["wandbRunId"] == run_id
    # Offline, each start writes its own directory under the same id (wandb sync uploads them).
    assert len(list(wandb_offline.glob(f"offline-run-*-{run_id}"))) == 2
    assert not {"WANDB_RUN_ID", "WANDB_RESUME"} & set(os.environ)

    monkeypatch.setenv("KUBETUNE_TRAIN_AFRESH", "1")
    fresh = train(config)
    assert fresh["resumedFrom"] is None and fresh["tracking"]["wandbRunId"] != run_id


def test_a_checkpoints_mlflow_run_is_continued_only_where_it_lives(mlflow_server, monkeypatch):
    """Another server, a deleted run or another experiment (the Secret changed between two starts)
    gets a new run rather than a failed resume."""
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "kubetune-continue")
    client = MlflowClient(mlflow_server)
    here, elsewhere = client.create_experiment("kubetune-continue"), client.create_experiment("kubetune-elsewhere")
    live, deleted = client.create_run(here).info.run_id, client.create_run(here).info.run_id
    client.delete_run(deleted)
    other = client.create_run(elsewhere).info.run_id
    assert tracking.mlflow_run_to_continue(live) == live
    for run_id in (deleted, other, "0" * 32, None):
        assert tracking.mlflow_run_to_continue(run_id) is None, run_id


def test_only_tracker_run_ids_come_back_from_a_checkpoint_marker():
    assert tracking.resumed_ids({"step": 2, "run": "sha256:run"}) == {}
    assert tracking.resumed_ids({"tracking": "mlflow"}) == {}
    marker = {"tracking": {"mlflowRunId": "abc", "wandbRunId": 7, "wandbRunUrl": "https://wandb.ai/x", "mlflowExperimentId": ""}}
    assert tracking.resumed_ids(marker) == {"mlflowRunId": "abc"}


def test_a_missing_tracker_package_or_server_is_bad_config(make_config, trainer_env, monkeypatch):
    import importlib.util

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for name in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match=r"report_to: mlflow needs MLFLOW_TRACKING_URI \(in a pod, a key of the"):
        train(make_config("sft", report_to=["mlflow"], max_steps=1, save_steps=1))
    with pytest.raises(ConfigError, match="report_to: wandb needs WANDB_API_KEY"):
        train(make_config("sft", report_to=["wandb"], max_steps=1, save_steps=1))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(ConfigError, match="report_to: mlflow needs the mlflow-skinny package"):
        train(make_config("sft", report_to=["mlflow"], max_steps=1, save_steps=1))
