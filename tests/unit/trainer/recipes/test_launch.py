"""`kubetune-trainer train --nproc-per-node 2`: two gloo workers on CPU, ZeRO-3 sharded across them.

HF Trainer once counted world size 1 under torchrun on CPU nodes (docs/training.md says why); the
epoch reached and the per-rank ZeRO shards prove both workers trained as one job of two.
"""

import json
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

from kubetune_trainer.cli import main
from tests.conftest import subprocess_env

from .conftest import read_jsonl


def command(tmp_path, config: dict, workers: int) -> list[str]:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return [
        sys.executable,
        "-m",
        "kubetune_trainer",
        "train",
        "--config",
        str(path),
        "--nproc-per-node",
        str(workers),
    ]


def launch(tmp_path, config: dict, workers: int = 2) -> subprocess.CompletedProcess:
    return subprocess.run(
        command(tmp_path, config, workers),
        env=subprocess_env(OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_two_workers_train_one_zero3_job(make_config, trainer_env, tmp_path):
    config = make_config("dpo", deepspeed_stage=3, max_steps=2, save_steps=2).to_dict()
    result = launch(tmp_path, config)
    assert result.returncode == 0, result.stderr[-4000:]

    output = tmp_path / "output"
    history = read_jsonl(output / "metrics.jsonl")
    # 8 training pairs, batch 1 per worker: with 2 workers, 2 steps are half an epoch (1 worker: a quarter).
    assert [e["epoch"] for e in history if "loss" in e] == [0.25, 0.5]
    checkpoint = output / "checkpoints" / "checkpoint-000002"
    shards = sorted(p.name for p in (checkpoint / "global_step2").iterdir())
    assert shards == [
        "zero_pp_rank_0_mp_rank_00_model_states.pt",
        "zero_pp_rank_0_mp_rank_00_optim_states.pt",
        "zero_pp_rank_1_mp_rank_00_model_states.pt",
        "zero_pp_rank_1_mp_rank_00_optim_states.pt",
    ]
    assert (checkpoint / "COMPLETE").is_file()
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["worldSize"] == 2
    summary = json.loads((trainer_env / "termination-log").read_text())
    assert summary["steps"] == 2 and summary["artifact"]["type"] == "adapter"


def test_a_full_bf16_zero3_run_saves_whole_16bit_weights(make_config, trainer_env, tmp_path, tiny_model_dir):
    # Under ZeRO-3 each rank holds a shard; the saved model must be the gathered whole, trained.
    from safetensors.torch import load_file

    config = make_config("sft", peft="full", deepspeed_stage=3, precision="bf16", max_steps=2, save_steps=2)
    result = launch(tmp_path, config.to_dict())
    assert result.returncode == 0, result.stderr[-4000:]
    saved = load_file(tmp_path / "output" / "final" / "model.safetensors")
    base = load_file(tiny_model_dir / "model.safetensors")
    assert set(saved) == set(base)
    assert all(saved[k].dtype == torch.bfloat16 and saved[k].shape == base[k].shape for k in base)
    assert all(not torch.equal(saved[k].float(), base[k].float()) for k in base)
    assert json.loads((tmp_path / "output" / "manifest.json").read_text())["precision"] == "bf16"


def test_a_worker_failure_keeps_its_exit_code(make_config, trainer_env, tmp_path):
    config = make_config("sft", dataset_fingerprint="sha256:stale").to_dict()
    result = launch(tmp_path, config)
    # torchrun alone would exit 1 here; the operator needs 67 to fail the job at once.
    assert result.returncode == 67, result.stderr[-4000:]
    assert json.loads((trainer_env / "termination-log").read_text())["reason"] == "DatasetFingerprintMismatch"


def test_sigterm_to_the_launcher_checkpoints_every_rank_and_exits_75(make_config, trainer_env, tmp_path):
    """A preempted pod: SIGTERM reaches the launcher, which passes it on; the workers agree on a step,
    write one checkpoint together and exit 75, which the launcher keeps."""
    config = make_config("dpo", deepspeed_stage=3, max_steps=100_000, save_steps=100_000).to_dict()
    process = subprocess.Popen(
        command(tmp_path, config, 2),
        env=subprocess_env(OMP_NUM_THREADS="1"),
        stderr=subprocess.PIPE,
        text=True,
    )
    progress = trainer_env / "progress.jsonl"
    deadline = time.monotonic() + 240
    while not (progress.is_file() and any(e.get("step", 0) >= 2 for e in read_jsonl(progress))):
        assert process.poll() is None and time.monotonic() < deadline, "training never reached step 2"
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=240)
    assert process.returncode == 75, stderr[-4000:]

    checkpoints = sorted((tmp_path / "output" / "checkpoints").iterdir())
    assert len(checkpoints) == 1 and (checkpoints[0] / "COMPLETE").is_file()
    step = int(checkpoints[0].name.split("-")[1])
    shards = {p.name for p in (checkpoints[0] / f"global_step{step}").iterdir()}
    assert {
        "zero_pp_rank_0_mp_rank_00_optim_states.pt",
        "zero_pp_rank_1_mp_rank_00_optim_states.pt",
    } <= shards
    summary = json.loads((trainer_env / "termination-log").read_text())
    assert summary["reason"] == "Preempted" and checkpoints[0].name in summary["error"]


def test_several_nodes_without_a_master_address_are_a_bad_config(
    make_config, trainer_env, tmp_path, monkeypatch
):
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    argv = command(tmp_path, make_config("sft").to_dict(), 1)[3:] + ["--nnodes", "2"]
    assert main(argv) == 64
    summary = json.loads((trainer_env / "termination-log").read_text())
    assert summary["reason"] == "BadConfig" and "--master-addr" in summary["error"]


@pytest.mark.parametrize(
    ("rank", "exitcode", "code", "error"),
    [
        (0, -9, 1, "worker rank 0 was killed by signal 9"),
        (1, 67, 67, "worker rank 1 exited with code 67"),
    ],
)
def test_the_first_failed_worker_decides_the_exit_code_and_the_summary(
    make_config, trainer_env, tmp_path, monkeypatch, rank, exitcode, code, error
):
    def fail(_args):
        failure = ProcessFailure(local_rank=rank, pid=1, exitcode=exitcode, error_file="")
        raise ChildFailedError("kubetune_trainer", {rank: failure})

    monkeypatch.setattr("torch.distributed.run.run", fail)
    assert main(command(tmp_path, make_config("sft").to_dict(), 2)[3:]) == code
    assert json.loads((trainer_env / "termination-log").read_text())["error"] == error
