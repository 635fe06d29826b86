"""Every method TrainConfig accepts has a recipe, and the recipe is the one for that method."""

from typing import get_args, get_type_hints

import pytest

from kubetune_trainer.recipes import RECIPES, recipe_for
from kubetune_trainer.recipes.config import TrainConfig, config_from_dict


def test_every_method_has_its_recipe():
    assert set(RECIPES) == set(get_args(get_type_hints(TrainConfig)["method"]))


@pytest.mark.parametrize("method", sorted(RECIPES))
def test_the_recipe_chosen_trains_the_configured_method(method):
    # A batch of 2: KTO's KL term pairs answers within a batch, and every method trains on it.
    config = config_from_dict(
        {"method": method, "base_model": "/m", "dataset": "/d", "output": "/o", "per_device_train_batch_size": 2}
    )
    recipe = recipe_for(config)
    assert recipe.method == method and recipe.config is config
