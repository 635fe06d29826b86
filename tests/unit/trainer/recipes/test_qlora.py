"""QLoRA on the CPU: bitsandbytes quantizes the tiny base to 4-bit NF4 there too (slowly)."""

import json

import pytest

from kubetune_trainer.recipes import train

from .conftest import losses, read_jsonl

pytest.importorskip("bitsandbytes", reason="QLoRA needs bitsandbytes (kubetune-trainer[test] installs it)")


def test_qlora_sft_learns_and_merges_into_an_unquantized_model(make_config, trainer_env, tmp_path):
    summary = train(make_config("sft", peft="qlora", max_steps=8, save_steps=4, merge_final=True))
    output = tmp_path / "output"
    train_losses = losses(read_jsonl(output / "metrics.jsonl"))
    assert sum(train_losses[-3:]) / 3 < sum(train_losses[:3]) / 3 - 0.2, train_losses
    assert summary["artifact"]["type"] == "adapter"
    adapter = json.loads((output / "final" / "adapter_config.json").read_text())
    assert adapter["peft_type"] == "LORA"
    # The merge reloads the base unquantized: a 4-bit merge would lose the base's precision.
    merged_config = json.loads((output / "merged" / "config.json").read_text())
    assert "quantization_config" not in merged_config
    assert json.loads((output / "merged" / "kubetune.json").read_text())["type"] == "merged"


def test_qlora_dpo_against_the_adapter_disabled_quantized_base(make_config, trainer_env, tmp_path):
    train(make_config("dpo", peft="qlora", per_device_train_batch_size=2, max_steps=12, save_steps=12))
    history = read_jsonl(tmp_path / "output" / "metrics.jsonl")
    margins = losses(history, "rewards/margins")
    assert sum(margins[-4:]) / 4 > sum(margins[:4]) / 4 + 0.5, margins
    lineage = json.loads((tmp_path / "output" / "final" / "kubetune.json").read_text())
    assert lineage["referenceModel"] == "base + mergedAdapters, adapter disabled"
