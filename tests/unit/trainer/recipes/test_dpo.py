"""DPO: TRL's arguments from the TrainConfig; end to end on the tiny model, LoRA against the
adapter-disabled base, full, precomputed reference."""

import json

import pytest
import torch

from kubetune_trainer import storage
from kubetune_trainer.recipes import train
from kubetune_trainer.recipes.config import config_from_dict
from kubetune_trainer.recipes.dpo import DPORecipe

from .conftest import losses, read_jsonl

DPO = {"method": "dpo", "base_model": "/m", "dataset": "/d", "output": "/o"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU choices")
def test_training_arguments_on_cpu_turn_off_trl_defaults(tmp_path, monkeypatch):
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    config = config_from_dict(DPO | {"loss_type": "hinge", "beta": 0.3, "warmup_ratio": 0.1})
    args = DPORecipe(config).training_arguments("fp32", str(tmp_path), evaluate=True)
    # use_cpu is what makes Accelerate count torchrun workers on CPU-only nodes (see distributed.py).
    assert args.use_cpu is True
    # TRL defaults to bf16 and gradient checkpointing; the TrainConfig decides instead.
    assert args.bf16 is False and args.gradient_checkpointing is False
    assert args.loss_type == ["hinge"] and args.beta == 0.3 and args.warmup_steps == 0.1
    assert args.metric_for_best_model == "eval_loss" and args.greater_is_better is False
    assert args.logging_nan_inf_filter is False
    assert args.loss_weights is None
    assert args.full_determinism is False
    deterministic = config_from_dict(DPO | {"full_determinism": True})
    assert DPORecipe(deterministic).training_arguments("fp32", str(tmp_path), evaluate=False).full_determinism is True


def test_sft_loss_weight_adds_trls_sft_loss(tmp_path, monkeypatch):
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    config = config_from_dict(DPO | {"sft_loss_weight": 0.5})
    args = DPORecipe(config).training_arguments("fp32", str(tmp_path), evaluate=False)
    assert args.loss_type == ["sigmoid", "sft"] and args.loss_weights == [1.0, 0.5]


def test_lora_dpo_raises_reward_accuracy_and_margin_from_s3_to_s3(
    make_config, trainer_env, tiny_model_dir, s3_bucket
):
    base = f"s3://{s3_bucket}/models/tiny"
    storage.upload_dir(tiny_model_dir, base)
    output = f"s3://{s3_bucket}/ns/finetunejobs/dpo"
    config = make_config(
        "dpo",
        base_model=base,
        output=output,
        per_device_train_batch_size=2,
        max_steps=12,
        save_steps=6,
        save_total_limit=1,
    )
    summary = train(config)

    history = [json.loads(line) for line in storage.read_text(f"{output}/metrics.jsonl").splitlines()]
    # 8 training pairs in batches of 2: steps 1-4 are the first epoch, steps 9-12 the third.
    accuracies, margins = losses(history, "rewards/accuracies"), losses(history, "rewards/margins")
    assert sum(accuracies[-4:]) / 4 > sum(accuracies[:4]) / 4
    assert sum(accuracies[-4:]) / 4 == 1.0
    assert sum(margins[-4:]) / 4 > sum(margins[:4]) / 4 + 0.5, margins
    lineage = json.loads(storage.read_text(f"{output}/final/kubetune.json"))
    assert lineage["referenceModel"] == "base + mergedAdapters, adapter disabled"
    assert lineage["baseModel"] == base
    assert summary["artifact"]["uri"] == f"{output}/final"
    assert storage.exists(f"{output}/manifest.json")
    assert storage.exists(f"{output}/checkpoints/checkpoint-000012/COMPLETE")
    assert not storage.exists(f"{output}/checkpoints/checkpoint-000006/COMPLETE")  # pruned: keep 1

    events = read_jsonl(trainer_env / "progress.jsonl")
    step_events = [e for e in events if "reward_margin" in e]
    assert step_events and {"reward_accuracy", "loss", "learning_rate", "tokens_per_second"} <= set(
        step_events[-1]
    )


def test_full_dpo_with_precomputed_reference_log_probs(make_config, trainer_env, tmp_path):
    summary = train(
        make_config("dpo", peft="full", precompute_ref_log_probs=True, learning_rate=1e-3, max_steps=4)
    )
    history = read_jsonl(tmp_path / "output" / "metrics.jsonl")
    margins = losses(history, "rewards/margins")
    assert margins[-1] > margins[0]
    assert summary["artifact"]["type"] == "full"
    lineage = json.loads((tmp_path / "output" / "final" / "kubetune.json").read_text())
    assert lineage["referenceModel"] == "base + mergedAdapters, log-probs precomputed before training"


@pytest.mark.parametrize(
    "overrides",
    [{"loss_type": "ipo"}, {"loss_type": "hinge"}, {"sft_loss_weight": 1.0}],
    ids=["ipo", "hinge", "rpo"],
)
def test_other_dpo_losses_train(make_config, trainer_env, tmp_path, overrides):
    train(make_config("dpo", beta=0.5, max_steps=3, save_steps=3, **overrides))
    history = read_jsonl(tmp_path / "output" / "metrics.jsonl")
    train_losses = losses(history)
    assert len(train_losses) == 3 and train_losses[-1] < train_losses[0]
