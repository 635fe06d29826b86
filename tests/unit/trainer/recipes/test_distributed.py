import pytest
import torch

from kubetune_trainer.errors import ConfigError
from kubetune_trainer.recipes import distributed
from kubetune_trainer.recipes.config import config_from_dict
from kubetune_trainer.recipes.distributed import World, deepspeed_config, resolve_attention, resolve_precision

REQUIRED = {"method": "dpo", "base_model": "/m", "dataset": "/d", "output": "/o"}


def test_no_deepspeed_config_at_stage_0():
    assert deepspeed_config(config_from_dict(REQUIRED), "fp32") is None


def test_zero3_gathers_16bit_weights_and_offloads_as_asked():
    config = config_from_dict(
        REQUIRED | {"deepspeed_stage": 3, "offload_optimizer": True, "offload_params": True}
    )
    generated = deepspeed_config(config, "bf16")
    zero = generated["zero_optimization"]
    assert zero["stage"] == 3
    assert zero["stage3_gather_16bit_weights_on_model_save"] is True
    assert zero["offload_optimizer"]["device"] == "cpu" and zero["offload_param"]["device"] == "cpu"
    assert generated["bf16"] == {"enabled": True} and generated["fp16"]["enabled"] is False
    # The HF Trainer fills these from the TrainConfig, so the two can never disagree.
    for key in (
        "train_micro_batch_size_per_gpu",
        "gradient_accumulation_steps",
        "gradient_clipping",
        "train_batch_size",
    ):
        assert generated[key] == "auto"


def test_zero2_has_no_stage3_keys_and_no_offload_unless_asked():
    generated = deepspeed_config(config_from_dict(REQUIRED | {"deepspeed_stage": 2}), "fp16")
    zero = generated["zero_optimization"]
    assert zero["stage"] == 2 and zero["reduce_scatter"] is True
    assert not any(key.startswith("stage3") for key in zero)
    assert "offload_optimizer" not in zero and "offload_param" not in zero
    assert generated["fp16"]["enabled"] is True and generated["bf16"] == {"enabled": False}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU choices")
def test_precision_on_cpu():
    assert resolve_precision("auto") == "fp32"
    assert resolve_precision("bf16") == "bf16"
    with pytest.raises(ConfigError, match="precision: fp16 needs a CUDA GPU"):
        resolve_precision("fp16")


@pytest.mark.parametrize(
    ("cuda", "kernels", "precision", "quantized", "expected"),
    [
        (True, True, "bf16", False, "flash_attention_2"),
        (True, True, "fp16", False, "flash_attention_2"),
        (True, True, "fp32", True, "flash_attention_2"),  # QLoRA computes in 16 bits over a 4-bit base
        (True, True, "fp32", False, "sdpa"),  # FlashAttention has no fp32 kernels
        (True, False, "bf16", False, "sdpa"),
        (False, True, "bf16", False, "sdpa"),
    ],
)
def test_auto_attention_is_flash_attention_where_it_runs(monkeypatch, cuda, kernels, precision, quantized, expected):
    monkeypatch.setattr(distributed, "cuda_available", lambda: cuda)
    monkeypatch.setattr("importlib.util.find_spec", lambda name: object() if kernels else None)
    assert resolve_attention("auto", precision, quantized) == expected
    assert resolve_attention("eager", precision, quantized) == "eager"


def test_flash_attention_asked_for_where_it_cannot_run_names_the_field_and_why(monkeypatch):
    monkeypatch.setattr(distributed, "cuda_available", lambda: False)
    with pytest.raises(ConfigError, match="attn_implementation: flash_attention_2 cannot run here: it needs a CUDA GPU"):
        resolve_attention("flash_attention_2", "bf16")
    monkeypatch.setattr(distributed, "cuda_available", lambda: True)
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(ConfigError, match="the flash_attn package is not installed"):
        resolve_attention("flash_attention_2", "bf16")


def test_world_from_torchrun_env(monkeypatch):
    for key, value in {"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(key, value)
    world = World.from_env()
    assert (world.rank, world.local_rank, world.world_size, world.local_world_size) == (3, 1, 4, 2)
    assert world.distributed and not world.is_main and not world.is_local_main
