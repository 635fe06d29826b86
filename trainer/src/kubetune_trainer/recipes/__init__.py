"""Training recipes: one module per method, each a `Recipe` (base.py) in torchtune's shape.

- `base.py`: setup (downloads, chain, lineage), resume, train, save: what every method shares;
- `sft.py`, `dpo.py`, `orpo.py`, `simpo.py`, `kto.py`: what a method adds (its rows, TRL config
  and trainer, reference model); `preference.py`: what the pairwise ones share;
- `config.py` (TrainConfig), `cli.py` (`kubetune-trainer train`), and helpers: `modeling.py` (base
  models, chains, LoRA), `trainers.py` (arguments and guards every TRL trainer gets),
  `callbacks.py`, `checkpoints.py`, `distributed.py`, `chat.py`.

A new method is a module here with its Recipe, a line in RECIPES and its name in TrainConfig.method.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kubetune_trainer.recipes.base import Recipe
    from kubetune_trainer.recipes.config import TrainConfig

# method -> its Recipe class, imported only when chosen: recipes pull in torch and TRL.
RECIPES = {
    "sft": "kubetune_trainer.recipes.sft:SFTRecipe",
    "dpo": "kubetune_trainer.recipes.dpo:DPORecipe",
    "orpo": "kubetune_trainer.recipes.orpo:ORPORecipe",
    "simpo": "kubetune_trainer.recipes.simpo:SimPORecipe",
    "kto": "kubetune_trainer.recipes.kto:KTORecipe",
}


def recipe_for(config: TrainConfig) -> Recipe:
    module, _, name = RECIPES[config.method].partition(":")
    return getattr(import_module(module), name)(config)


def train(config: TrainConfig) -> dict[str, Any]:
    """Run the job; returns the termination summary (rank 0; other ranks get an empty dict)."""
    return recipe_for(config).run()
