"""DPO (and RPO, with `sft_loss_weight`): TRL's DPOTrainer on prompt/chosen/rejected pairs.

A new loss of TRL's DPO family is a `loss_type` value in TrainConfig (and the API), nothing here.
"""

from __future__ import annotations

from typing import Any

from trl import DPOConfig, DPOTrainer

from kubetune_trainer.recipes.preference import PairRecipe
from kubetune_trainer.recipes.trainers import NaNGuard, NoStepPastTheEnd


def reference_of(config) -> str:
    """The reference model a method with one trains against, as the lineage names it."""
    if config.precompute_ref_log_probs:
        return "base + mergedAdapters, log-probs precomputed before training"
    if config.peft == "full":
        return "base + mergedAdapters, frozen copy"
    return "base + mergedAdapters, adapter disabled"


class KubetuneDPOTrainer(NaNGuard, NoStepPastTheEnd, DPOTrainer):
    """TRL's DPOTrainer that stops at the first non-finite loss and never trains past max_steps."""


class DPORecipe(PairRecipe):
    method = "dpo"
    trainer_class = KubetuneDPOTrainer

    def arguments(self, common: dict[str, Any]) -> DPOConfig:
        config = self.config
        return DPOConfig(
            **common,
            beta=config.beta,
            # RPO: TRL's "sft" loss is the NLL of the chosen answers, added with this weight.
            loss_type=[config.loss_type, "sft"] if config.sft_loss_weight else [config.loss_type],
            loss_weights=[1.0, config.sft_loss_weight] if config.sft_loss_weight else None,
            label_smoothing=config.label_smoothing,
            precompute_ref_log_probs=config.precompute_ref_log_probs,
            padding_free=config.padding_free,
        )

    def reference_model(self) -> str:
        return reference_of(self.config)
