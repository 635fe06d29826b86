"""SimPO: TRL's CPOTrainer (trl.experimental) with loss_type simpo, on prompt/chosen/rejected pairs.

The reward is the length-normalised log-likelihood of an answer times `beta`; the loss asks the
chosen answer's reward to beat the rejected one's by `simpo_gamma`. `sft_loss_weight` adds the NLL
of the chosen answers (CPO's alpha: CPO-SimPO); 0 is plain SimPO. No reference model.
"""

from __future__ import annotations

from typing import Any

from kubetune_trainer.recipes.preference import PairRecipe, experimental, without_empty_answers
from kubetune_trainer.recipes.trainers import NaNGuard, NoStepPastTheEnd

CPOConfig, CPOTrainer = experimental("cpo").CPOConfig, experimental("cpo").CPOTrainer


class KubetuneCPOTrainer(NaNGuard, NoStepPastTheEnd, CPOTrainer):
    """TRL's CPOTrainer that stops at the first non-finite loss and never trains past max_steps."""


class SimPORecipe(PairRecipe):
    method = "simpo"
    trainer_class = KubetuneCPOTrainer

    def arguments(self, common: dict[str, Any]) -> CPOConfig:
        config = self.config
        return CPOConfig(
            **common,
            loss_type="simpo",
            beta=config.beta,
            simpo_gamma=config.simpo_gamma,
            cpo_alpha=config.sft_loss_weight,
            remove_unused_columns=False,
        )

    def drop_unusable(self, trainer: Any) -> None:
        without_empty_answers(trainer)
