"""`kubetune-trainer train --nproc-per-node 2`: two gloo workers on CPU, ZeRO-3 sharded across them.

HF Trainer once counted world size 1 under torchrun on CPU nodes (docs/training.md says why); the
epoch reached and the per-rank ZeRO shards prove both workers trained as one job of two.
"""

import json
import subprocess
import sys

import yaml

from tests.conftest import subprocess_env

from .conftest import read_jsonl


def launch(tmp_path, config: dict, workers: int = 2) -> subprocess.CompletedProcess:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "kubetune_trainer",
            "train",
            "--config",
            str(path),
            "--nproc-per-node",
            str(workers),
        ],
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


def test_a_worker_failure_keeps_its_exit_code(make_config, trainer_env, tmp_path):
    config = make_config("sft", dataset_fingerprint="sha256:stale").to_dict()
    result = launch(tmp_path, config)
    # torchrun alone would exit 1 here; the operator needs 67 to fail the job at once.
    assert result.returncode == 67, result.stderr[-4000:]
    assert json.loads((trainer_env / "termination-log").read_text())["reason"] == "DatasetFingerprintMismatch"
