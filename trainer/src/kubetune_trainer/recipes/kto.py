"""KTO: TRL's KTOTrainer on unpaired rows, each one answer labelled desirable or undesirable.

Against a reference model like DPO (the true base with the adapter disabled, a frozen copy, or
precomputed log-probs). With loss_type kto the KL term is estimated from the other answers of the
same micro-batch, so per_device_train_batch_size must be 2 or more (TrainConfig checks it).
"""

from __future__ import annotations

from typing import Any

from trl import KTOConfig, KTOTrainer

from kubetune_trainer.recipes.base import Recipe, Setup
from kubetune_trainer.recipes.dpo import reference_of
from kubetune_trainer.recipes.preference import check_rows_render, record_kept
from kubetune_trainer.recipes.trainers import NaNGuard, NoStepPastTheEnd

ROW = ("prompt", "completion", "label")


class KubetuneKTOTrainer(NaNGuard, NoStepPastTheEnd, KTOTrainer):
    """TRL's KTOTrainer that stops at the first non-finite loss and never trains past max_steps."""


class KTORecipe(Recipe):
    method = "kto"
    rows = "kto"

    def arguments(self, common: dict[str, Any]) -> KTOConfig:
        config = self.config
        return KTOConfig(
            **common,
            beta=config.beta,
            loss_type=config.kto_loss_type,
            desirable_weight=config.desirable_weight,
            undesirable_weight=config.undesirable_weight,
            precompute_ref_log_probs=config.precompute_ref_log_probs,
        )

    def reference_model(self) -> str:
        return reference_of(self.config)

    def build(self, state: Setup, common: dict[str, Any]) -> KubetuneKTOTrainer:
        from datasets import Dataset
        from jinja2 import TemplateError

        def rows(split: list[dict[str, Any]]):
            return Dataset.from_list([{k: row[k] for k in ROW} for row in split])

        test = rows(state.dataset.test) if state.dataset.test else None
        try:
            trainer = KubetuneKTOTrainer(train_dataset=rows(state.dataset.train), eval_dataset=test, **common)
        except TemplateError:
            check_rows_render(state.tokenizer, state.dataset.train + state.dataset.test, ("completion",))
            raise
        record_kept(state, trainer, self.config.cutoff_len, unit="row")
        return trainer
