"""SFT end to end on the tiny model: LoRA and full, key-token weights, packing, outputs and progress."""

import json

import pytest

from kubetune_trainer.errors import DataError
from kubetune_trainer.recipes.run import train

from .conftest import losses, read_jsonl


def test_lora_sft_with_key_tokens_and_packing_learns(make_config, trainer_env, tmp_path, tiny_model_dir):
    config = make_config(
        "sft",
        max_steps=8,
        save_steps=4,
        key_token_patterns=["判断:(是|否)"],
        key_token_weight=3.0,
        packing=True,
    )
    summary = train(config)
    output = tmp_path / "output"
    history = read_jsonl(output / "metrics.jsonl")
    train_losses = losses(history)
    assert len(train_losses) == 8
    assert sum(train_losses[-3:]) / 3 < sum(train_losses[:3]) / 3 - 0.2, train_losses
    eval_losses = losses(history, "eval_loss")
    assert eval_losses[-1] < eval_losses[0]

    assert summary["steps"] == 8 and summary["artifact"]["type"] == "adapter"
    assert summary["finalLoss"] == train_losses[-1]
    assert summary["bestCheckpoint"].endswith("/checkpoints/checkpoint-000008")
    assert summary["bestEvalLoss"] == eval_losses[-1]
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "kubetune.json"} <= set(
        summary["artifact"]["sha256"]
    )
    lineage = json.loads((output / "final" / "kubetune.json").read_text())
    assert lineage["type"] == "adapter" and lineage["method"] == "sft"
    assert lineage["baseModel"] == f"file://{tiny_model_dir}" and lineage["mergedAdapters"] == []
    assert lineage["datasetFingerprint"] == "sha256:recipes-test"

    manifest = json.loads((output / "manifest.json").read_text())
    assert (
        manifest["files"]["final/adapter_model.safetensors"]
        == summary["artifact"]["sha256"]["adapter_model.safetensors"]
    )
    assert "metrics.jsonl" in manifest["files"]
    assert manifest["config"]["key_token_weight"] == 3.0
    assert manifest["attention"] == "sdpa"  # FlashAttention 2 needs CUDA
    assert {"torch", "transformers", "trl", "peft", "deepspeed"} <= set(manifest["versions"])
    assert set(manifest["timings"]) == {"setup", "data", "train", "save"}
    assert manifest["data"]["train"] == {"rows": 12, "truncated": 0, "dropped": {}}

    events = read_jsonl(trainer_env / "progress.jsonl")
    assert [e["phase"] for e in events][:3] == ["setup", "data", "train"] and events[-1]["phase"] == "done"
    steps = [e for e in events if e.get("loss") is not None]
    assert steps[-1]["step"] == 8 and steps[-1]["total_steps"] == 8 and steps[-1]["percent"] == 100.0
    assert all(e["tokens_per_second"] > 0 for e in steps[1:]) and "eta_seconds" in steps[0]
    assert any(e.get("checkpoint", "").endswith("checkpoint-000004") for e in events)


def test_full_sft_writes_a_full_model(make_config, trainer_env, tmp_path):
    summary = train(
        make_config("sft", peft="full", learning_rate=1e-3, max_steps=4, save_steps=2, save_total_limit=1)
    )
    output = tmp_path / "output"
    assert summary["artifact"]["type"] == "full"
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= set(summary["artifact"]["sha256"])
    assert json.loads((output / "final" / "kubetune.json").read_text())["type"] == "full"
    train_losses = losses(read_jsonl(output / "metrics.jsonl"))
    assert train_losses[-1] < train_losses[0]
    # save_total_limit 1 keeps the newest and the best, here the same checkpoint.
    assert sorted(p.name for p in (output / "checkpoints").iterdir()) == ["checkpoint-000004"]

    # A new run into the same output withdraws the old manifest before it rewrites anything.
    assert (output / "manifest.json").is_file()
    with pytest.raises(DataError, match=r"no row keeps an assistant token within cutoff_len \(8\)"):
        train(make_config("sft", peft="full", cutoff_len=8))
    assert not (output / "manifest.json").exists()


def test_a_run_shorter_than_logging_steps_still_reports_its_final_loss(make_config, trainer_env, tmp_path):
    summary = train(make_config("sft", max_steps=3, save_steps=3, logging_steps=10))
    train_losses = losses(read_jsonl(tmp_path / "output" / "metrics.jsonl"))
    assert len(train_losses) == 1
    assert summary["finalLoss"] == train_losses[-1]
