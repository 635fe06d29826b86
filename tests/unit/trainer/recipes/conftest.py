"""Prepared datasets written straight from tests/fixtures/data, and a TrainConfig factory for the recipes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kubetune_trainer.recipes.config import TrainConfig, config_from_dict

FINGERPRINT = "sha256:recipes-test"


def write_prepared(directory: Path, rows: list[dict], test_rows: int, fingerprint: str = FINGERPRINT) -> Path:
    """A prepared dataset directory (contracts §6) holding canonical rows."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, part in (("train", rows[test_rows:]), ("test", rows[:test_rows])):
        (directory / f"{name}.jsonl").write_text(
            "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in part), encoding="utf-8"
        )
    (directory / "manifest.json").write_text(json.dumps({"fingerprint": fingerprint}), encoding="utf-8")
    return directory


@pytest.fixture(scope="session")
def sft_rows(sample_data) -> list[dict]:
    lines = (sample_data / "defects" / "sft_chat.jsonl").read_text(encoding="utf-8").splitlines()
    return [
        {
            "messages": json.loads(line)["text"],
            "metadata": {"subtype": json.loads(line)["subtype"], "source": f"sft_chat.jsonl:{n}"},
        }
        for n, line in enumerate(lines, start=1)
    ]


@pytest.fixture(scope="session")
def preference_rows(sample_data) -> list[dict]:
    lines = (sample_data / "trl" / "preference.jsonl").read_text(encoding="utf-8").splitlines()
    return [
        dict(json.loads(line), metadata={"source": f"preference.jsonl:{n}"})
        for n, line in enumerate(lines, start=1)
    ]


@pytest.fixture(scope="session")
def sft_dataset(tmp_path_factory, sft_rows) -> Path:
    return write_prepared(tmp_path_factory.mktemp("sft-dataset"), sft_rows, test_rows=4)


@pytest.fixture(scope="session")
def dpo_dataset(tmp_path_factory, preference_rows) -> Path:
    return write_prepared(tmp_path_factory.mktemp("dpo-dataset"), preference_rows, test_rows=2)


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
def make_config(tmp_path, tiny_model_dir, sft_dataset, dpo_dataset):
    """TrainConfig for the tiny model: short runs, every step logged."""

    def make(method: str = "sft", **overrides) -> TrainConfig:
        fields = {
            "method": method,
            "base_model": str(tiny_model_dir),
            "dataset": str(sft_dataset if method == "sft" else dpo_dataset),
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


def losses(history: list[dict], key: str = "loss") -> list[float]:
    return [entry[key] for entry in history if key in entry]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
