"""KTO rows: a prompt, one answer and whether it is desirable, from TRL's unpaired format, LLaMA-Factory's
kto_tag column (dataset_info.json) and its kto_en_demo layout (auto-detected)."""

from __future__ import annotations

import pytest

from kubetune_trainer.data import llamafactory
from kubetune_trainer.errors import ConfigError

from .conftest import write_jsonl


def test_trl_unpaired_rows(prepare, sample_data):
    result = prepare("--source", sample_data / "kto/trl_unpaired.jsonl", "--kind", "kto")
    assert "TRL unpaired preference" in result.manifest["format_evidence"]
    rows = result.all_rows()
    chinese = [r for r in rows if r["prompt"][0]["content"] == "中国的首都是哪里？"]
    assert sorted((r["completion"][0]["content"], r["label"]) for r in chinese) == [
        ("北京。", True), ("北京北京北京北京。", False)]
    # Both answers to one prompt stay on one side of the split.
    assert len({r["prompt"][0]["content"] for r in result.rows("test")} & {
        r["prompt"][0]["content"] for r in result.rows("train")}) == 0
    assert set(result.manifest["lengths"]) == {"prompt", "answer"}
    assert result.manifest["labels"] == {"desirable": 8, "undesirable": 8}


def test_llamafactory_kto_tag_reads_the_last_turn_as_the_answer(prepare, sample_data):
    result = prepare("--dataset-info", sample_data / "kto/dataset_info.json", "--dataset", "kto_demo", "--kind", "kto")
    row = next(r for r in result.all_rows() if r["metadata"]["source"].endswith(":54"))
    assert row["prompt"] == [{"role": "system", "content": "Reply politely."},
                             {"role": "user", "content": "Thanks for the help!"}]
    assert row["completion"] == [{"role": "assistant", "content": "You are welcome."}]
    assert row["label"] is True and "label" not in row["metadata"]


def test_kto_entries_need_a_kto_tag_and_others_must_not_have_one():
    with pytest.raises(ConfigError, match=r"columns\.kto_tag: KTO rows need the column"):
        llamafactory._checked(llamafactory.DatasetAttr(), "kto", "x")
    with pytest.raises(ConfigError, match=r"kto_tag makes KTO rows .* but --kind is sft"):
        llamafactory._checked(llamafactory.DatasetAttr(kto_tag="label"), "sft", "x")


def test_labels_must_be_booleans(prepare, tmp_path, capsys):
    rows = [{"prompt": "q", "completion": "a", "label": True}, {"prompt": "q2", "completion": "b", "label": "maybe"},
            {"prompt": "q3", "completion": "c", "label": "False"}]
    source = write_jsonl(tmp_path / "kto.jsonl", rows)
    result = prepare("--source", source, "--kind", "kto", "--max-drop-fraction", "0.5")
    assert result.rc == 0
    assert result.manifest["dropped"] == {"wrong_type": 1}
    assert result.manifest["drop_examples"][0]["detail"] == "label is a string, not a boolean"
    assert sorted(r["label"] for r in result.all_rows()) == [False, True]  # CSV-style "False" reads as false


def test_kto_rows_are_not_read_as_another_kind(prepare, sample_data, capsys):
    result = prepare("--source", sample_data / "kto/trl_unpaired.jsonl", "--kind", "sft")
    assert result.rc == 64
    assert "holds kto rows (trl: prompt/completion with a boolean label" in capsys.readouterr().err
