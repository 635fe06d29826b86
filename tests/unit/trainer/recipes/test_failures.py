"""Failures end with the exit code the operator maps to a condition reason, and a summary saying why."""

import json
import shutil

import pytest
import torch
import yaml

from kubetune_trainer.cli import main
from kubetune_trainer.errors import BaseModelMissing, NaNLoss, OutOfMemory
from kubetune_trainer.recipes import train
from kubetune_trainer.recipes.sft import KubetuneSFTTrainer
from tests.unit.trainer.prepared import write_prepared

from .test_sft import REFUSES_SYSTEM


def run_cli(tmp_path, fields) -> int:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(fields, allow_unicode=True), encoding="utf-8")
    return main(["train", "--config", str(path)])


def termination(trainer_env) -> dict:
    return json.loads((trainer_env / "termination-log").read_text())


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(make_config, trainer_env, tmp_path):
    # Adam moves every weight by about the learning rate: 1e30 overflows the second forward.
    config = make_config("sft", peft="full", learning_rate=1e30, max_steps=4, save_steps=1)
    with pytest.raises(NaNLoss, match=r"loss is nan at step 2; .*Last good checkpoint: .*checkpoint-000001"):
        train(config)
    checkpoints = tmp_path / "output" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-000001"]
    assert (checkpoints / "checkpoint-000001" / "COMPLETE").is_file()
    assert not (tmp_path / "output" / "final").exists()


def test_cuda_oom_names_the_knobs(make_config, trainer_env, monkeypatch):
    def out_of_memory(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(KubetuneSFTTrainer, "training_step", out_of_memory)
    with pytest.raises(OutOfMemory) as caught:
        train(make_config("sft", per_device_train_batch_size=4, cutoff_len=512))
    message = caught.value.message
    assert message.startswith("CUDA out of memory. Tried to allocate 20.00 GiB.")
    for knob in (
        "per_device_train_batch_size (now 4",
        "cutoff_len (now 512)",
        "gradient_checkpointing (now false)",
        "deepspeed_stage (now 0",
        "offload_optimizer/offload_params",
    ):
        assert knob in message


@pytest.mark.parametrize(
    ("overrides", "code", "reason", "message"),
    [
        ({"learning_rate": -1}, 64, "BadConfig", "learning_rate: Input should be greater than 0"),
        ({"dataset_fingerprint": "sha256:stale"}, 67, "DatasetFingerprintMismatch", "expected sha256:stale"),
        (
            {"base_model": "/nonexistent/qwen"},
            66,
            "BaseModelMissing",
            "base_model: /nonexistent/qwen: no model there",
        ),
    ],
)
def test_cli_exit_codes_and_termination_summary(
    make_config, trainer_env, tmp_path, capsys, overrides, code, reason, message
):
    fields = make_config("sft").to_dict() | overrides
    assert run_cli(tmp_path, fields) == code
    summary = termination(trainer_env)
    assert summary["kind"] == "train" and summary["reason"] == reason and message in summary["error"]
    assert message in capsys.readouterr().err


def test_a_pair_the_chat_template_refuses_is_bad_data_naming_its_row(
    make_config, trainer_env, tmp_path, tiny_model_dir, preference_rows
):
    # TRL's DPOTrainer renders the pairs itself and its template error names no row.
    base = shutil.copytree(tiny_model_dir, tmp_path / "strict-base")
    (base / "chat_template.jinja").write_text(REFUSES_SYSTEM, encoding="utf-8")
    rows = [dict(row, prompt=[m for m in row["prompt"] if m["role"] != "system"]) for row in preference_rows]
    rows[5] = dict(rows[5], prompt=[{"role": "system", "content": "请简短回答"}, *rows[5]["prompt"]])
    dataset = write_prepared(tmp_path / "dataset", rows, test_rows=2)
    config = make_config("dpo", base_model=str(base), dataset=str(dataset)).to_dict()
    assert run_cli(tmp_path, config) == 65
    summary = termination(trainer_env)
    assert summary["reason"] == "BadData"
    assert summary["error"].startswith("preference.jsonl:6: the base model's chat template refuses")


def test_missing_s3_base_model_names_the_uri(make_config, trainer_env, s3_bucket):
    with pytest.raises(BaseModelMissing, match=f"base_model: s3://{s3_bucket}/models/none: no model there"):
        train(make_config("sft", base_model=f"s3://{s3_bucket}/models/none"))


def test_cli_success_writes_the_train_summary(make_config, trainer_env, tmp_path, capsys):
    assert run_cli(tmp_path, make_config("dpo", max_steps=2, save_steps=2).to_dict()) == 0
    summary = termination(trainer_env)
    assert summary["kind"] == "train" and summary["steps"] == 2
    assert summary["artifact"]["uri"] == f"file://{tmp_path}/output/final"
    assert set(summary) >= {
        "output",
        "merged",
        "trueBase",
        "bestCheckpoint",
        "bestEvalLoss",
        "finalLoss",
        "resumedFrom",
        "timings",
    }
    assert "trained adapter at" in capsys.readouterr().out
