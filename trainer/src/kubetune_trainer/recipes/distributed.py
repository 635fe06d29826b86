"""One code path for a single CPU process and for torchrun across N nodes x G GPUs.

Why HF Trainer once computed world size 1 under torchrun: on a machine without CUDA, Accelerate's
`PartialState._prepare_backend` only picks a backend for `LOCAL_RANK != -1` when it finds an
accelerator device (CUDA, XPU, NPU, ...) or when it was told `cpu=True`. TrainingArguments passes
`cpu=True` only for `use_cpu=True`, so each torchrun worker on a CPU-only node ended up with
`DistributedType.NO` and trained alone on the whole dataset as "rank 0 of 1". `training_arguments`
therefore sets `use_cpu=True` and the gloo backend wherever CUDA is absent. DeepSpeed on CPU needs
one more step: its engine counts ranks through `deepspeed.comm`, which only Accelerate's DeepSpeed
path initialises, and that path is skipped for `use_cpu=True`; `prepare_process_group` initialises
it (gloo) before the arguments are built. docs/training.md has the details.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from kubetune_trainer.errors import ConfigError
from kubetune_trainer.recipes.config import TrainConfig


@dataclass(frozen=True)
class World:
    rank: int
    local_rank: int
    world_size: int
    local_world_size: int

    @classmethod
    def from_env(cls) -> World:
        env = os.environ
        world_size = int(env.get("WORLD_SIZE", "1"))
        return cls(
            rank=int(env.get("RANK", "0")),
            local_rank=int(env.get("LOCAL_RANK", "0")),
            world_size=world_size,
            local_world_size=int(env.get("LOCAL_WORLD_SIZE", str(world_size))),
        )

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_local_main(self) -> bool:
        return self.local_rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_precision(precision: str) -> str:
    """`auto` is bf16 on a GPU that has it and fp32 everywhere else."""
    import torch

    if precision == "auto":
        return "bf16" if cuda_available() and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "fp16" and not cuda_available():
        raise ConfigError("precision: fp16 needs a CUDA GPU (use fp32 or bf16 on CPU)")
    return precision


def resolve_attention(requested: str, precision: str, quantized: bool = False) -> str:
    """`auto` is FlashAttention 2 where it can run (a CUDA GPU, 16-bit weights, `flash_attn`
    installed: the GPU image has it), else PyTorch's SDPA, which runs everywhere."""
    import importlib.util

    usable = cuda_available() and (precision in ("bf16", "fp16") or quantized)
    has_kernels = importlib.util.find_spec("flash_attn") is not None
    if requested == "auto":
        return "flash_attention_2" if usable and has_kernels else "sdpa"
    if requested == "flash_attention_2" and not (usable and has_kernels):
        why = "the flash_attn package is not installed" if usable else "it needs a CUDA GPU and precision bf16 or fp16"
        raise ConfigError(f"attn_implementation: flash_attention_2 cannot run here: {why} (use auto or sdpa)")
    return requested


def deepspeed_config(config: TrainConfig, precision: str) -> dict | None:
    """The ZeRO config for `deepspeed_stage`; "auto" values are filled in by the HF Trainer."""
    if config.deepspeed_stage == 0:
        return None
    pin = cuda_available()
    zero: dict = {
        "stage": config.deepspeed_stage,
        "overlap_comm": True,
        "contiguous_gradients": True,
        "reduce_bucket_size": "auto",
    }
    if config.deepspeed_stage == 2:
        zero |= {"allgather_partitions": True, "allgather_bucket_size": 2e8, "reduce_scatter": True}
    else:
        zero |= {
            "stage3_prefetch_bucket_size": "auto",
            "stage3_param_persistence_threshold": "auto",
            "stage3_max_live_parameters": 1e9,
            "stage3_max_reuse_distance": 1e9,
            "sub_group_size": 1e9,
            # The final save writes one consolidated 16-bit model instead of per-rank shards.
            "stage3_gather_16bit_weights_on_model_save": True,
        }
    if config.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": pin}
    if config.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": pin}
    return {
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {
            "enabled": precision == "fp16",
            "loss_scale": 0,
            "loss_scale_window": 1000,
            "initial_scale_power": 16,
            "hysteresis": 2,
            "min_loss_scale": 1,
        },
        "zero_optimization": zero,
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "steps_per_print": 1_000_000,
        "wall_clock_breakdown": False,
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prepare_process_group(config: TrainConfig) -> None:
    """Set up what TrainingArguments cannot: DeepSpeed's own process group off CUDA.

    A single process started without a launcher gets the rendezvous variables a launcher would
    set, because DeepSpeed always initialises a process group.
    """
    if config.deepspeed_stage == 0:
        return
    if "LOCAL_RANK" not in os.environ:
        for key, value in (
            ("RANK", "0"),
            ("LOCAL_RANK", "0"),
            ("WORLD_SIZE", "1"),
            ("LOCAL_WORLD_SIZE", "1"),
            ("MASTER_ADDR", "127.0.0.1"),
            ("MASTER_PORT", str(_free_port())),
        ):
            os.environ.setdefault(key, value)
    if not cuda_available():
        import deepspeed

        deepspeed.init_distributed(dist_backend="gloo", auto_mpi_discovery=False)


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def any_rank(flag: bool, device) -> bool:
    """True on every rank when `flag` is true on any rank (each rank must call it at the same point)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)
