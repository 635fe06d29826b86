"""The GPU paths: bf16 by default, ZeRO-3 on NCCL, QLoRA. Skipped where no CUDA GPU is present."""

import importlib.util
import json

import pytest
import torch

from kubetune_trainer.recipes import train

from .conftest import losses, read_jsonl
from .test_launch import launch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_lora_dpo_on_gpu_trains_in_bf16(make_config, trainer_env, tmp_path):
    train(make_config("dpo", per_device_train_batch_size=2, max_steps=8, save_steps=4))
    manifest = json.loads((tmp_path / "output" / "manifest.json").read_text())
    assert manifest["precision"] == ("bf16" if torch.cuda.is_bf16_supported() else "fp32")
    has_flash_attn = importlib.util.find_spec("flash_attn") is not None
    assert manifest["attention"] == ("flash_attention_2" if has_flash_attn and manifest["precision"] == "bf16" else "sdpa")
    margins = losses(read_jsonl(tmp_path / "output" / "metrics.jsonl"), "rewards/margins")
    assert margins[-1] > margins[0]


def test_zero3_on_gpus(make_config, trainer_env, tmp_path):
    config = make_config("dpo", deepspeed_stage=3, max_steps=2, save_steps=2).to_dict()
    result = launch(tmp_path, config, workers=torch.cuda.device_count())
    assert result.returncode == 0, result.stderr[-4000:]
    assert (tmp_path / "output" / "final" / "adapter_model.safetensors").is_file()


def test_qlora_sft(make_config, trainer_env, tmp_path):
    pytest.importorskip("bitsandbytes", reason="QLoRA needs bitsandbytes (kubetune-trainer[gpu])")
    summary = train(make_config("sft", peft="qlora", max_steps=4, save_steps=2))
    assert summary["artifact"]["type"] == "adapter"
