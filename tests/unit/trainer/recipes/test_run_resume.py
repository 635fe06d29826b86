"""Preemption and resume: SIGTERM at step k writes a checkpoint, exits 75, and a new start finishes
with the same losses as a run that was never interrupted."""

import os
import signal

import pytest
import torch
from safetensors.torch import load_file

from kubetune_trainer.errors import Preempted
from kubetune_trainer.recipes import callbacks
from kubetune_trainer.recipes.run import train

from .conftest import losses, read_jsonl

STEPS = 6


@pytest.fixture
def sigterm_at_step(monkeypatch):
    """Deliver SIGTERM to this process at the end of the given optimizer step (None: never)."""
    original = callbacks.Preemption.on_step_end

    def arm(step: int | None) -> None:
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == step:
                os.kill(os.getpid(), signal.SIGTERM)
            return original(self, args, state, control, **kwargs)

        monkeypatch.setattr(callbacks.Preemption, "on_step_end", on_step_end)

    return arm


def test_resume_after_sigterm_matches_an_uninterrupted_run(
    make_config, trainer_env, tmp_path, sigterm_at_step
):
    whole, split = tmp_path / "whole", tmp_path / "split"
    fields = {"max_steps": STEPS, "save_steps": 2, "lora_dropout": 0.1}
    train(make_config("sft", output=str(whole), **fields))

    sigterm_at_step(3)
    with pytest.raises(Preempted, match=r"checkpoint file://.*/checkpoints/checkpoint-000003 written"):
        train(make_config("sft", output=str(split), **fields))
    assert (split / "checkpoints" / "checkpoint-000003" / "COMPLETE").is_file()
    assert not (split / "final").exists()
    progress = read_jsonl(trainer_env / "progress.jsonl")
    assert progress[-1]["message"] == "preempted"

    sigterm_at_step(None)
    summary = train(make_config("sft", output=str(split), **fields))
    assert summary["resumedFrom"].endswith("/checkpoints/checkpoint-000003")
    assert summary["steps"] == STEPS

    expected = losses(read_jsonl(whole / "metrics.jsonl"))
    resumed = losses(read_jsonl(split / "metrics.jsonl"))
    assert len(resumed) == len(expected) == STEPS
    assert resumed == pytest.approx(expected, rel=1e-5, abs=1e-6)
    weights = load_file(whole / "final" / "adapter_model.safetensors")
    for name, tensor in load_file(split / "final" / "adapter_model.safetensors").items():
        assert torch.allclose(tensor, weights[name], atol=1e-6), name


def test_a_start_after_the_last_step_trains_no_further(make_config, trainer_env, tmp_path):
    """A pod that died after its last checkpoint but before the manifest (say, in the upload of
    final/) is retried; the retry resumes at max_steps and must not train one step more."""
    config = make_config("sft", max_steps=2, save_steps=2)
    first = train(config)
    output = tmp_path / "output"
    (output / "manifest.json").unlink()

    again = train(config)
    assert again["resumedFrom"].endswith("/checkpoints/checkpoint-000002")
    assert again["steps"] == 2
    assert again["artifact"]["sha256"] == first["artifact"]["sha256"]
    assert len(losses(read_jsonl(output / "metrics.jsonl"))) == 2
    assert sorted(p.name for p in (output / "checkpoints").iterdir()) == ["checkpoint-000002"]
