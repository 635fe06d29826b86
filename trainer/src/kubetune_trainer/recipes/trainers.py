"""TRL's SFT and DPO trainers plus what kubetune adds: key-token weights, a NaN stop, no step past the end.

Both recipes build their TRL config from the one TrainConfig, so that a field means the same
thing under SFT and DPO, on CPU and under torchrun.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling
from trl.trainer.utils import pad

from kubetune_trainer.errors import NaNLoss
from kubetune_trainer.recipes.config import TrainConfig
from kubetune_trainer.recipes.distributed import World, cuda_available, deepspeed_config

TOKEN_WEIGHTS = "token_weights"


def training_arguments(
    config: TrainConfig, precision: str, output_dir: str, evaluate: bool
) -> SFTConfig | DPOConfig:
    common: dict[str, Any] = dict(
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
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
        max_length=config.cutoff_len,
    )
    if config.method == "sft":
        return SFTConfig(
            **common,
            # Rows arrive tokenised and (with packing) packed by kubetune_trainer.recipes.data.
            dataset_kwargs={"skip_prepare_dataset": True},
            packing=False,
            padding_free=False,
        )
    return DPOConfig(
        **common,
        beta=config.beta,
        # RPO: TRL's "sft" loss is the NLL of the chosen answers, added with this weight.
        loss_type=[config.loss_type, "sft"] if config.sft_loss_weight else [config.loss_type],
        loss_weights=[1.0, config.sft_loss_weight] if config.sft_loss_weight else None,
        precompute_ref_log_probs=config.precompute_ref_log_probs,
        padding_free=config.padding_free,
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


@dataclass
class WeightedCollator(DataCollatorForLanguageModeling):
    """TRL's language-modelling collator, plus the per-token loss weights laid out like the labels."""

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        if TOKEN_WEIGHTS not in examples[0]:
            return super().torch_call(examples)
        weights = [torch.tensor(example[TOKEN_WEIGHTS], dtype=torch.float32) for example in examples]
        output = super().torch_call([{k: v for k, v in e.items() if k != TOKEN_WEIGHTS} for e in examples])
        if self.padding_free:
            weights = [torch.cat(weights)]
        output[TOKEN_WEIGHTS] = pad(
            weights, padding_value=0.0, padding_side="right", pad_to_multiple_of=self.pad_to_multiple_of
        )
        return output


class KubetuneSFTTrainer(NaNGuard, NoStepPastTheEnd, SFTTrainer):
    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if TOKEN_WEIGHTS not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, TOKEN_WEIGHTS]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        weights = inputs.pop(TOKEN_WEIGHTS, None)
        if weights is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        # Same normalisation as TRL's loss (per trainable token), so weight 1.0 everywhere is plain SFT.
        outputs = model(**inputs, use_cache=False, fused_lm_head=True)
        per_token = -outputs.log_probs * weights[:, 1:].to(outputs.log_probs.dtype)
        count = outputs.label_mask.sum() if num_items_in_batch is None else num_items_in_batch
        loss = per_token.sum() / torch.as_tensor(count).clamp(min=1)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes
        return (loss, outputs) if return_outputs else loss


class KubetuneDPOTrainer(NaNGuard, NoStepPastTheEnd, DPOTrainer):
    """TRL's DPOTrainer that stops at the first non-finite loss and never trains past max_steps."""


def last_finite(history: list[dict[str, Any]], key: str) -> float | None:
    for entry in reversed(history):
        value = entry.get(key)
        if isinstance(value, int | float) and math.isfinite(value):
            return float(value)
    return None
