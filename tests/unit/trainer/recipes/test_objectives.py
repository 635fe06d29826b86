"""Preference objectives besides sigmoid DPO: every loss of TRL's DPO family, ORPO and SimPO (no
reference model), KTO on unpaired rows. Each learns on the tiny model in a few steps: the reward
margin rises (the KTO loss falls)."""

import json

import pytest

from kubetune_trainer.errors import ConfigError
from kubetune_trainer.recipes import train
from kubetune_trainer.recipes.config import DPO_LOSSES, config_from_dict

from .conftest import losses, read_jsonl

# sigmoid, ipo and hinge are trained in test_dpo.py.
NEW_DPO_LOSSES = [loss for loss in DPO_LOSSES if loss not in ("sigmoid", "ipo", "hinge")]
# What each loss needs besides the defaults.
EXTRA = {"exo_pair": {"label_smoothing": 1e-3}, "robust": {"label_smoothing": 0.1}}


def margins(output) -> list[float]:
    return losses(read_jsonl(output / "metrics.jsonl"), "rewards/margins")


@pytest.mark.parametrize("loss_type", NEW_DPO_LOSSES)
def test_every_dpo_loss_raises_the_reward_margin(make_config, trainer_env, tmp_path, loss_type):
    options = {"beta": 0.5} | EXTRA.get(loss_type, {})
    config = make_config(
        "dpo", loss_type=loss_type, per_device_train_batch_size=4, max_steps=4, save_steps=4, **options
    )
    train(config)
    margin = margins(tmp_path / "output")
    assert margin[-1] > margin[0], margin


@pytest.mark.parametrize(
    ("method", "overrides"),
    [("orpo", {"beta": 0.5}), ("simpo", {"beta": 2.0, "simpo_gamma": 0.5}), ("simpo", {"beta": 2.0, "sft_loss_weight": 1.0})],
    ids=["orpo", "simpo", "cpo-simpo"],
)
def test_reference_free_objectives_learn_without_a_reference_model(make_config, trainer_env, tmp_path, method, overrides):
    train(make_config(method, per_device_train_batch_size=4, max_steps=6, save_steps=6, **overrides))
    output = tmp_path / "output"
    history = read_jsonl(output / "metrics.jsonl")
    margin = losses(history, "rewards/margins")
    accuracy = losses(history, "rewards/accuracies")
    assert margin[-1] > margin[0], margin
    assert accuracy[-1] >= accuracy[0], accuracy
    lineage = json.loads((output / "final" / "kubetune.json").read_text())
    assert lineage["method"] == method and lineage["referenceModel"] is None
    assert json.loads((output / "manifest.json").read_text())["referenceModel"] is None


def test_kto_loss_falls_on_unpaired_rows(make_config, trainer_env, tmp_path):
    train(make_config("kto", per_device_train_batch_size=4, max_steps=6, save_steps=6, beta=0.5))
    output = tmp_path / "output"
    history = read_jsonl(output / "metrics.jsonl")
    train_losses = losses(history)
    assert train_losses[-1] < train_losses[0], train_losses
    lineage = json.loads((output / "final" / "kubetune.json").read_text())
    assert lineage["method"] == "kto" and lineage["referenceModel"] == "base + mergedAdapters, adapter disabled"
    assert json.loads((output / "manifest.json").read_text())["data"]["train"] == {"rows": 12, "dropped": {}}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"method": "kto", "per_device_train_batch_size": 1}, "per_device_train_batch_size: kto needs 2 or more"),
        ({"method": "dpo", "loss_type": "exo_pair"}, "label_smoothing: loss_type exo_pair needs it above 0"),
        ({"method": "dpo", "loss_type": "ipo", "label_smoothing": 0.1}, "label_smoothing: applies to method dpo with"),
        ({"method": "dpo", "loss_type": "robust", "label_smoothing": 0.5}, "label_smoothing: Input should be less than 0.5"),
        ({"method": "orpo", "precompute_ref_log_probs": True}, "method orpo has no reference model"),
        ({"method": "dpo", "loss_type": "sft"}, "loss_type: Input should be 'sigmoid'"),
    ],
)
def test_objective_options_that_cannot_apply_name_the_field(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        config_from_dict({"base_model": "/m", "dataset": "/d", "output": "/o"} | overrides)
