"""Prepared datasets from tests/fixtures/data, for the tests of reading them back and of training on them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.unit.trainer.prepared import write_prepared


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


@pytest.fixture(scope="session")
def kto_rows(sample_data) -> list[dict]:
    lines = (sample_data / "kto" / "trl_unpaired.jsonl").read_text(encoding="utf-8").splitlines()
    return [
        dict(json.loads(line), metadata={"source": f"trl_unpaired.jsonl:{n}"})
        for n, line in enumerate(lines, start=1)
    ]


@pytest.fixture(scope="session")
def kto_dataset(tmp_path_factory, kto_rows) -> Path:
    return write_prepared(tmp_path_factory.mktemp("kto-dataset"), kto_rows, test_rows=4)
