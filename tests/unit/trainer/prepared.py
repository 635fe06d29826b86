"""Prepared datasets (contracts §6) written straight from canonical rows, as `data prepare` would."""

from __future__ import annotations

import json
from pathlib import Path

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
