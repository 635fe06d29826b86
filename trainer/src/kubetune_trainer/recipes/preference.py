"""What the pairwise preference methods (dpo.py, orpo.py, simpo.py) share: prompt/chosen/rejected rows
handed to a TRL trainer, with the pairs it cannot train counted rather than lost quietly.

A method subclasses `PairRecipe`, sets its TRL trainer class and builds its TRL config; KTO (kto.py),
which reads one answer per row, shares `record_kept` and `check_rows_render`.
"""

from __future__ import annotations

import logging
import warnings
from importlib import import_module
from types import ModuleType
from typing import Any, ClassVar

from kubetune_trainer.errors import DataError
from kubetune_trainer.recipes.base import Recipe, Setup
from kubetune_trainer.recipes.chat import refused_by_template, render

log = logging.getLogger(__name__)

PAIR = ("prompt", "chosen", "rejected")


def experimental(name: str) -> ModuleType:
    """A trainer of `trl.experimental`, without the warning TRL gives on import: the pin (trl==1.16.0)
    holds its API still."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*trl.experimental")
        return import_module(f"trl.experimental.{name}")


def record_kept(state: Setup, trainer: Any, cutoff_len: int, unit: str = "pair") -> None:
    """Count, per split, the rows the trainer kept of those it was given; DataError when no training
    row is left. The rows a TRL trainer leaves out are those whose prompt alone fills cutoff_len."""
    test = state.dataset.test
    kept = {"train": len(trainer.train_dataset), "test": len(trainer.eval_dataset) if test else 0}
    for split, rows in (("train", state.dataset.train), ("test", test)):
        dropped = len(rows) - kept[split]
        state.data_stats[split] = {"rows": len(rows), "dropped": {"prompt_fills_cutoff_len": dropped} if dropped else {}}
        if dropped:
            log.warning("%s: dropped %d %s(s) whose prompt alone fills cutoff_len (%d)", split, dropped, unit, cutoff_len)
    if not len(trainer.train_dataset):
        raise DataError(f"dataset: {state.dataset.uri}/train.jsonl: every prompt fills cutoff_len ({cutoff_len})")


def check_rows_render(tokenizer, rows: list[dict[str, Any]], answers: tuple[str, ...]) -> None:
    """Render every row as TRL's trainers do; DataError naming the first one the template refuses.

    Called once TRL has failed on a template error, which names no row.
    """
    from jinja2 import TemplateError

    for row in rows:
        try:
            render(tokenizer, row["prompt"], generation_prompt=True)
            for key in answers:
                render(tokenizer, row["prompt"] + row[key])
        except TemplateError as exc:
            raise refused_by_template(row["source"], exc) from exc


class PairRecipe(Recipe):
    """A method trained on prompt/chosen/rejected pairs by one of TRL's preference trainers."""

    rows = "preference"
    trainer_class: ClassVar[type]

    def drop_unusable(self, trainer: Any) -> None:
        """Leave out the tokenised pairs the trainer cannot learn from; TRL's DPOTrainer does it itself."""

    def build(self, state: Setup, common: dict[str, Any]) -> Any:
        from datasets import Dataset
        from jinja2 import TemplateError

        def pairs(rows: list[dict[str, Any]]):
            return Dataset.from_list([{k: row[k] for k in PAIR} for row in rows])

        test = pairs(state.dataset.test) if state.dataset.test else None
        try:
            trainer = self.trainer_class(train_dataset=pairs(state.dataset.train), eval_dataset=test, **common)
        except TemplateError:
            check_rows_render(state.tokenizer, state.dataset.train + state.dataset.test, ("chosen", "rejected"))
            raise
        self.drop_unusable(trainer)
        record_kept(state, trainer, self.config.cutoff_len)
        return trainer


def without_empty_answers(trainer: Any) -> None:
    """TRL's ORPO and CPO trainers cut the answers of a pair whose prompt fills max_length to nothing
    instead of leaving the pair out; leave it out, as the DPOTrainer does."""

    def usable(row: dict[str, Any]) -> bool:
        return any(t != -100 for t in row["chosen_labels"]) and any(t != -100 for t in row["rejected_labels"])

    trainer.train_dataset = trainer.train_dataset.filter(usable)
    if trainer.eval_dataset is not None:
        trainer.eval_dataset = trainer.eval_dataset.filter(usable)
