"""DPO (and RPO, with `sft_loss_weight`): TRL's DPOTrainer on prompt/chosen/rejected pairs.

A new loss of TRL's DPO family is a `loss_type` value in TrainConfig (and the API), nothing here.
"""

from __future__ import annotations

import logging
from typing import Any

from trl import DPOConfig, DPOTrainer

from kubetune_trainer.errors import DataError
from kubetune_trainer.recipes.base import Recipe, Setup
from kubetune_trainer.recipes.chat import refused_by_template, render
from kubetune_trainer.recipes.trainers import NaNGuard, NoStepPastTheEnd

log = logging.getLogger(__name__)

PAIR = ("prompt", "chosen", "rejected")


class DPORecipe(Recipe):
    method = "dpo"
    rows = "preference"

    def arguments(self, common: dict[str, Any]) -> DPOConfig:
        config = self.config
        return DPOConfig(
            **common,
            beta=config.beta,
            # RPO: TRL's "sft" loss is the NLL of the chosen answers, added with this weight.
            loss_type=[config.loss_type, "sft"] if config.sft_loss_weight else [config.loss_type],
            loss_weights=[1.0, config.sft_loss_weight] if config.sft_loss_weight else None,
            precompute_ref_log_probs=config.precompute_ref_log_probs,
            padding_free=config.padding_free,
        )

    def reference_model(self) -> str:
        if self.config.precompute_ref_log_probs:
            return "base + mergedAdapters, log-probs precomputed before training"
        if self.config.peft == "full":
            return "base + mergedAdapters, frozen copy"
        return "base + mergedAdapters, adapter disabled"

    def build(self, state: Setup, common: dict[str, Any]) -> KubetuneDPOTrainer:
        from datasets import Dataset
        from jinja2 import TemplateError

        def pairs(rows: list[dict[str, Any]]):
            return Dataset.from_list([{k: row[k] for k in PAIR} for row in rows])

        config = self.config
        test = pairs(state.dataset.test) if state.dataset.test else None
        try:
            trainer = KubetuneDPOTrainer(train_dataset=pairs(state.dataset.train), eval_dataset=test, **common)
        except TemplateError:
            check_pairs_render(state.tokenizer, state.dataset.train + state.dataset.test)
            raise
        # TRL drops pairs whose prompt alone fills max_length; say how many instead of losing them quietly.
        kept = {"train": len(trainer.train_dataset), "test": len(trainer.eval_dataset) if test is not None else 0}
        for split, rows in (("train", state.dataset.train), ("test", state.dataset.test)):
            dropped = len(rows) - kept[split]
            state.data_stats[split] = {
                "rows": len(rows),
                "dropped": {"prompt_fills_cutoff_len": dropped} if dropped else {},
            }
            if dropped:
                log.warning(
                    "%s: dropped %d pair(s) whose prompt alone fills cutoff_len (%d)",
                    split,
                    dropped,
                    config.cutoff_len,
                )
        if not len(trainer.train_dataset):
            raise DataError(
                f"dataset: {state.dataset.uri}/train.jsonl: every prompt fills cutoff_len ({config.cutoff_len})"
            )
        return trainer


def check_pairs_render(tokenizer, rows: list[dict[str, Any]]) -> None:
    """Render every pair as TRL's DPOTrainer does; DataError naming the first one the template refuses.

    Called once TRL has failed on a template error, which names no row.
    """
    from jinja2 import TemplateError

    for row in rows:
        try:
            render(tokenizer, row["prompt"], generation_prompt=True)
            for key in ("chosen", "rejected"):
                render(tokenizer, row["prompt"] + row[key])
        except TemplateError as exc:
            raise refused_by_template(row["source"], exc) from exc


class KubetuneDPOTrainer(NaNGuard, NoStepPastTheEnd, DPOTrainer):
    """TRL's DPOTrainer that stops at the first non-finite loss and never trains past max_steps."""
