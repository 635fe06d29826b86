"""A TrainConfig factory for the recipes, the scratch, progress and termination files of one run, and
SIGTERM at a chosen step."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from kubetune_trainer.recipes.config import TrainConfig, config_from_dict


@pytest.fixture
def trainer_env(tmp_path, monkeypatch) -> Path:
    """Scratch, progress file and termination log of this test; yields the directory holding them."""
    monkeypatch.setenv("KUBETUNE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("KUBETUNE_PROGRESS_FILE", str(tmp_path / "progress.jsonl"))
    monkeypatch.setenv("KUBETUNE_PROGRESS_INTERVAL", "0")
    monkeypatch.setenv("KUBETUNE_METRICS_PORT", "0")
    monkeypatch.setenv("KUBETUNE_TERMINATION_LOG", str(tmp_path / "termination-log"))
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    return tmp_path


@pytest.fixture
def make_config(tmp_path, tiny_model_dir, sft_dataset, dpo_dataset, kto_dataset):
    """TrainConfig for the tiny model: short runs, every step logged."""
    datasets = {"sft": sft_dataset, "kto": kto_dataset}

    def make(method: str = "sft", **overrides) -> TrainConfig:
        fields = {
            "method": method,
            "base_model": str(tiny_model_dir),
            "dataset": str(datasets.get(method, dpo_dataset)),
            "output": str(tmp_path / "output"),
            "learning_rate": 5e-3,
            "max_steps": 6,
            "save_steps": 3,
            "logging_steps": 1,
            "lr_scheduler_type": "constant",
            "cutoff_len": 256,
        }
        return config_from_dict(fields | overrides)

    return make


@pytest.fixture
def sigterm_at_step(monkeypatch):
    """Deliver SIGTERM to this process at the end of the given optimizer step (None: never)."""
    from kubetune_trainer.recipes import callbacks

    original = callbacks.Preemption.on_step_end

    def arm(step: int | None) -> None:
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == step:
                os.kill(os.getpid(), signal.SIGTERM)
            return original(self, args, state, control, **kwargs)

        monkeypatch.setattr(callbacks.Preemption, "on_step_end", on_step_end)

    return arm


def losses(history: list[dict], key: str = "loss") -> list[float]:
    return [entry[key] for entry in history if key in entry]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
