"""A prepared dataset read back for training: rows checked again, fingerprint held, bad rows named."""

import json

import pytest

from kubetune_trainer import storage
from kubetune_trainer.data.prepared import load_prepared
from kubetune_trainer.errors import DataError, FingerprintMismatch
from tests.unit.trainer.prepared import FINGERPRINT, write_prepared


def test_prepared_dataset_loads_and_checks_its_fingerprint(sft_dataset):
    dataset = load_prepared(str(sft_dataset), "sft", FINGERPRINT)
    assert (len(dataset.train), len(dataset.test), dataset.fingerprint) == (12, 4, FINGERPRINT)
    assert dataset.train[0]["source"] == "sft_chat.jsonl:5"
    with pytest.raises(
        FingerprintMismatch, match=r"dataset_fingerprint: expected sha256:other, but .*manifest.json has"
    ):
        load_prepared(str(sft_dataset), "sft", "sha256:other")


def test_a_directory_without_manifest_is_not_a_prepared_dataset(tmp_path):
    (tmp_path / "train.jsonl").write_text("{}\n")
    with pytest.raises(DataError) as raised:
        load_prepared(str(tmp_path), "sft")
    # The path once, not twice.
    assert raised.value.message == (
        f"dataset: file://{tmp_path}/manifest.json: No such file or directory (is this a prepared dataset?)"
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", r"train.jsonl:3: not JSON"),
        (
            json.dumps({"messages": [{"role": "user", "content": "hi"}]}),
            r"train.jsonl:3: messages: has no assistant",
        ),
        (
            json.dumps({"messages": [{"role": "bot", "content": "hi"}]}),
            r"train.jsonl:3: messages\[0\].role: must be one of",
        ),
        (
            json.dumps({"messages": [{"role": "assistant", "content": 3}]}),
            r"train.jsonl:3: messages\[0\].content: must be",
        ),
        (json.dumps(["a list"]), r"train.jsonl:3: must be a JSON object"),
    ],
)
def test_bad_sft_rows_name_file_and_line(tmp_path, sft_rows, line, message):
    directory = write_prepared(tmp_path / "ds", sft_rows[:3], test_rows=1)
    with open(directory / "train.jsonl", "a", encoding="utf-8") as handle:
        handle.write(line + "\n")
    with pytest.raises(DataError, match=message):
        load_prepared(str(directory), "sft")


def test_bad_preference_rows_name_file_and_line(tmp_path, preference_rows):
    broken = dict(preference_rows[0], rejected=[{"role": "user", "content": "not an answer"}])
    directory = write_prepared(tmp_path / "ds", [preference_rows[1], broken], test_rows=0)
    with pytest.raises(DataError, match=r"train.jsonl:2: rejected: must end with an assistant message"):
        load_prepared(str(directory), "preference")


def test_prepared_dataset_loads_from_s3(sft_dataset, s3_bucket):
    uri = f"s3://{s3_bucket}/ns/preferencedatasets/defects"
    storage.upload_dir(sft_dataset, uri)
    dataset = load_prepared(uri, "sft")
    local = load_prepared(str(sft_dataset), "sft")
    assert dataset.train == local.train and dataset.test == local.test


def test_tool_calls_weights_and_tools_come_back_for_the_trainer(tmp_path):
    call = {"type": "function", "function": {"name": "f", "arguments": {"x": 1}}}
    row = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "", "tool_calls": [call]},
                        {"role": "tool", "content": "r", "name": "f"},
                        {"role": "assistant", "content": "a", "loss_weight": 0.0}],
           "tools": [{"type": "function", "function": {"name": "f"}}], "metadata": {"source": "s:1"}}
    (read,) = load_prepared(str(write_prepared(tmp_path / "ds", [row], test_rows=0)), "sft").train
    assert read["messages"] == row["messages"] and read["tools"] == row["tools"]


def test_a_method_given_rows_of_another_kind_says_what_they_hold(tmp_path, preference_rows, kto_rows):
    pairs = write_prepared(tmp_path / "pairs", preference_rows[:2], test_rows=0)
    with pytest.raises(DataError, match=r"train.jsonl:1: completion: missing; a kto row needs prompt, completion "
                                        r"\(it holds preference rows"):
        load_prepared(str(pairs), "kto")
    (row,) = load_prepared(str(write_prepared(tmp_path / "kto", kto_rows[:1], test_rows=0)), "kto").train
    assert row["label"] is True and row["completion"][0]["role"] == "assistant"
    broken = write_prepared(tmp_path / "broken", [dict(kto_rows[0], label="yes")], test_rows=0)
    with pytest.raises(DataError, match=r"train.jsonl:1: label: must be true \(desirable\) or false"):
        load_prepared(str(broken), "kto")
