"""Experiment tracking through transformers' report_to integrations, and the curves every run plots:
MLflow against a real tracking server (file store) started here, TensorBoard read back from its
event files, W&B in its offline mode (no server is reachable from tests)."""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from kubetune_trainer import storage
from kubetune_trainer.errors import ConfigError
from kubetune_trainer.recipes import train

from .conftest import losses, read_jsonl

PNG = b"\x89PNG\r\n\x1a\n"
# What the recipe sets for the trackers; monkeypatch puts each back as it was after every test.
TRACKER_ENV = ("TENSORBOARD_LOGGING_DIR", "WANDB_DIR", "WANDB_PROJECT", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_TAGS")


@pytest.fixture(autouse=True)
def tracker_env(monkeypatch):
    for name in TRACKER_ENV:
        monkeypatch.delenv(name, raising=False)


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


def test_wandb_offline_run(make_config, trainer_env, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    (tmp_path / "wandb-dir").mkdir()
    summary = train(make_config("sft", report_to=["wandb"], tracking_project="kubetune-tests", max_steps=2, save_steps=2))
    run_id = summary["tracking"]["wandbRunId"]
    runs = list(Path(tmp_path / "wandb-dir" / "wandb").glob(f"offline-run-*-{run_id}"))
    assert runs and list(runs[0].glob("run-*.wandb"))


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
