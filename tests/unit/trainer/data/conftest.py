"""Run `kubetune-trainer data prepare` in-process and read back what it published."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from kubetune_trainer.cli import main


@dataclass
class Prepared:
    rc: int
    output: Path
    termination: dict

    @property
    def manifest(self) -> dict:
        return json.loads((self.output / "manifest.json").read_text())

    def rows(self, split: str) -> list[dict]:
        return [json.loads(line) for line in (self.output / f"{split}.jsonl").read_text().splitlines()]

    def all_rows(self) -> list[dict]:
        return self.rows("train") + self.rows("test")


@pytest.fixture
def prepare(tmp_path, monkeypatch):
    """prepare(*flags, output=None) runs the command and returns a Prepared."""
    termination_log = tmp_path / "termination-log"
    monkeypatch.setenv("KUBETUNE_TERMINATION_LOG", str(termination_log))
    for name in ("KUBETUNE_PROGRESS_URL", "KUBETUNE_PROGRESS_FILE", "KUBETUNE_METRICS_PORT", "KUBETUNE_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)
    runs = iter(range(1_000))

    def run(*flags, output: str | Path | None = None) -> Prepared:
        target = output or tmp_path / f"out-{next(runs)}"
        rc = main(["data", "prepare", *map(str, flags), "--output", str(target)])
        termination = json.loads(termination_log.read_text()) if termination_log.exists() else {}
        return Prepared(rc, Path(str(target)), termination)

    return run


def write_jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def pref(question: str, good: str = "good answer", bad: str = "bad answer", **extra) -> dict:
    """One TRL conversational preference row."""
    return {
        "prompt": [{"role": "user", "content": question}],
        "chosen": [{"role": "assistant", "content": good}],
        "rejected": [{"role": "assistant", "content": bad}],
        **extra,
    }
