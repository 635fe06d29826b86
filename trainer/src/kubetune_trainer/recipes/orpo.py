"""ORPO: TRL's ORPOTrainer (trl.experimental) on prompt/chosen/rejected pairs.

The NLL of the chosen answer plus `beta` (the paper's λ) times the log odds ratio of chosen over
rejected. No reference model: one forward pass per pair instead of DPO's two.
"""

from __future__ import annotations

from typing import Any

from kubetune_trainer.recipes.preference import PairRecipe, experimental, without_empty_answers
from kubetune_trainer.recipes.trainers import NaNGuard, NoStepPastTheEnd

ORPOConfig, ORPOTrainer = experimental("orpo").ORPOConfig, experimental("orpo").ORPOTrainer


class KubetuneORPOTrainer(NaNGuard, NoStepPastTheEnd, ORPOTrainer):
    """TRL's ORPOTrainer that stops at the first non-finite loss and never trains past max_steps."""


class ORPORecipe(PairRecipe):
    method = "orpo"
    trainer_class = KubetuneORPOTrainer

    def arguments(self, common: dict[str, Any]) -> ORPOConfig:
        # The pair collator needs the prompt/chosen/rejected columns the Trainer would otherwise remove.
        return ORPOConfig(**common, beta=self.config.beta, remove_unused_columns=False)

    def drop_unusable(self, trainer: Any) -> None:
        without_empty_answers(trainer)
