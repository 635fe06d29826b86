"""What kubetune adds to every method's TRL trainer: shared arguments, a NaN stop, no step past the end.

Every recipe builds its TRL config from the one TrainConfig through `common_arguments`, so that a
field means the same thing under every method, on CPU and under torchrun.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from kubetune_trainer.errors import NaNLoss
from kubetune_trainer.recipes.config import TrainConfig
from kubetune_trainer.recipes.distributed import World, cuda_available, deepspeed_config


def common_arguments(config: TrainConfig, precision: str, output_dir: str, evaluate: bool) -> dict[str, Any]:
    """The TrainingArguments every method's TRL config takes, as keyword arguments."""
    return dict(
        output_dir=output_dir,
        learning_rate=config.learning_rate,
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.per_device_train_batch_size,
        per_device_eval_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        # transformers 5 reads a warmup_steps below 1 as a fraction of the total steps.
        warmup_steps=config.warmup_ratio,
        weight_decay=config.weight_decay,
        lr_scheduler_type=config.lr_scheduler_type,
        max_grad_norm=config.max_grad_norm,
        seed=config.seed,
        data_seed=config.seed,
        full_determinism=config.full_determinism,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        gradient_checkpointing=config.gradient_checkpointing,
        deepspeed=deepspeed_config(config, precision),
        # CPU-only nodes: without use_cpu, Accelerate leaves every torchrun worker at world size 1.
        use_cpu=not cuda_available(),
        ddp_backend="gloo" if not cuda_available() and World.from_env().distributed else None,
        ddp_find_unused_parameters=False,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        eval_strategy="steps" if evaluate else "no",
        eval_steps=config.eval_interval if evaluate else None,
        metric_for_best_model="eval_loss" if evaluate else None,
        greater_is_better=False,
        logging_strategy="steps",
        logging_steps=config.logging_steps,
        # A NaN loss stops the run (NaNLoss); the filter would hide it behind an average instead.
        logging_nan_inf_filter=False,
        include_num_input_tokens_seen="non_padding",
        report_to=list(config.report_to),
        run_name=config.run_name,
        disable_tqdm=True,
        dataloader_num_workers=0,
        max_length=config.cutoff_len,
    )


class NaNGuard:
    """Stops at the first micro-batch whose loss is NaN or inf, before the optimizer applies it."""

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        if not torch.isfinite(loss):
            raise NaNLoss(f"loss is {loss.item()} at step {self.state.global_step + 1}")
        return loss


class NoStepPastTheEnd:
    """A run resumed from the checkpoint of its last step trains nothing more.

    transformers 5 tests for max_steps only after a step, so resuming at max_steps (a pod that
    died while saving final/) would train one step too many and change a finished model.
    """

    def _run_epoch(self, *args, **kwargs):
        if self.state.global_step >= self.state.max_steps:
            self.control.should_training_stop = True
            return None
        return super()._run_epoch(*args, **kwargs)


def last_finite(history: list[dict[str, Any]], key: str) -> float | None:
    for entry in reversed(history):
        value = entry.get(key)
        if isinstance(value, int | float) and math.isfinite(value):
            return float(value)
    return None
