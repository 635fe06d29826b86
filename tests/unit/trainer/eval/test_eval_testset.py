from __future__ import annotations

import json

import pytest

from kubetune_trainer import storage
from kubetune_trainer.errors import DataError
from kubetune_trainer.eval.testset import load_test_set


def test_llamafactory_replay_file_keeps_prompt_reference_and_line(sample_data):
    path = sample_data / "llamafactory" / "test.json"
    examples = load_test_set(str(path))
    assert len(examples) == 6
    first = examples[0]
    assert first.prompt == [{"role": "user", "content": "case-0: 天气?"}]
    assert first.reference == "今天北京晴，最高气温25度。"
    # The second element of the array starts on line 6 of the file.
    assert examples[1].source == f"{path}:6"
    assert examples[1].metadata["source"] == f"{path}:6"


def test_seed001_chat_rows_split_off_the_answer_and_keep_the_subtype(sample_data):
    examples = load_test_set(str(sample_data / "defects" / "sft_chat.jsonl"), max_samples=3)
    assert len(examples) == 3
    assert [m["role"] for m in examples[0].prompt] == ["user"]
    assert examples[0].reference.startswith("判断:否")
    assert examples[0].metadata["subtype"] == "空指针"


def test_prepared_dataset_directory_reads_its_split(tmp_path):
    rows = [
        {
            "messages": [
                {"role": "system", "content": "s"},
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "a"},
            ],
            "metadata": {"subtype": "x", "source": "raw.json:3"},
        },
        {
            "prompt": [{"role": "user", "content": "q2"}],
            "chosen": [{"role": "assistant", "content": "good"}],
            "rejected": [{"role": "assistant", "content": "bad"}],
            "metadata": {"subtype": "y"},
        },
    ]
    (tmp_path / "test.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    (tmp_path / "train.jsonl").write_text("")
    examples = load_test_set(f"file://{tmp_path}", split="test")
    assert [e.reference for e in examples] == ["a", "good"]
    assert [m["role"] for m in examples[0].prompt] == ["system", "user"]
    # The row's own provenance survives; where eval read it is kept beside it.
    assert examples[0].metadata["source"] == "raw.json:3"
    assert examples[0].source == f"{tmp_path}/test.jsonl:1"
    assert examples[1].metadata == {"subtype": "y", "source": f"{tmp_path}/test.jsonl:2"}


def test_prepared_dataset_on_s3(s3_bucket):
    storage.write_text(
        f"s3://{s3_bucket}/ds/test.jsonl",
        json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})
        + "\n",
    )
    assert [e.reference for e in load_test_set(f"s3://{s3_bucket}/ds")] == ["a"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n{"messages": [\n',
            "rows.jsonl:2: not valid JSON",
        ),
        (
            '{"text": "q", "standard_answer": \n',
            "rows.jsonl:1: not valid JSON (unexpected end of data: line 1 column 34",
        ),
        (
            '\n\n{"messages": [{"role": "user", "content": "q"}]}\n',
            "rows.jsonl:3: the last message of `messages` must be the assistant's answer",
        ),
        (
            '{"messages": [{"role": "bot", "content": "q"}, {"role": "assistant", "content": "a"}]}\n',
            "rows.jsonl:1: `messages[0].role` is 'bot'",
        ),
        ('{"question": "q"}\n', "rows.jsonl:1: unrecognised row with keys ['question']"),
        (
            '{"prompt": "q", "chosen": [{"role": "user", "content": "x"}]}\n',
            "rows.jsonl:1: `chosen` has no assistant message",
        ),
        ("[1, 2]\n", "rows.jsonl:1: expected a JSON object"),
        (
            '{"text": "q", "standard_answer": "a", "metadata": 3}\n',
            "rows.jsonl:1: `metadata` must be an object",
        ),
    ],
)
def test_broken_jsonl_rows_name_file_and_line(tmp_path, text, expected):
    path = tmp_path / "rows.jsonl"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError) as caught:
        load_test_set(str(path))
    assert f"{tmp_path}/{expected}" in caught.value.message


def test_broken_json_array_names_the_line(tmp_path):
    path = tmp_path / "test.json"
    path.write_text('[\n {"text": "a", "standard_answer": "b"},\n {"text": "c", "standard_answer": 3}\n]\n')
    with pytest.raises(DataError, match=rf"{path}:3: `text` and `standard_answer` must be text"):
        load_test_set(str(path))
    path.write_text('[\n {"text": "a", "standard_answer": "b"}\n {"text": "c"}\n]\n')
    with pytest.raises(DataError, match=rf"{path}:3: expected ',' or '\]'"):
        load_test_set(str(path))
    path.write_text('{"text": "a"}')
    with pytest.raises(DataError, match=rf"{path}:1: expected a JSON array"):
        load_test_set(str(path))


def test_missing_and_empty_test_sets_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="no such test set"):
        load_test_set(str(tmp_path / "nope.jsonl"))
    with pytest.raises(DataError, match=r"prepared dataset directory with test\.jsonl"):
        load_test_set(f"file://{tmp_path}")
    (tmp_path / "empty.json").write_text("[]")
    with pytest.raises(DataError, match="has no rows"):
        load_test_set(str(tmp_path / "empty.json"))
    (tmp_path / "latin1.jsonl").write_bytes('{"text": "é"}'.encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        load_test_set(str(tmp_path / "latin1.jsonl"))


ROW = '{"text": "q", "standard_answer": "a"'


@pytest.mark.parametrize("layout", ["jsonl", "json"])
@pytest.mark.parametrize(
    "tail, message",
    [
        (', "standard_answer": "b"}', "key 'standard_answer' appears twice in one object"),
        (', "score": NaN}', "NaN is not a number JSON can hold"),
        (', "score": Infinity}', "Infinity is not a number JSON can hold"),
        (', "x": ' + "[" * 5000 + "]" * 5000 + "}", "nested deeper than"),
    ],
    ids=["duplicate key", "NaN", "Infinity", "deep"],
)
def test_test_rows_parsers_read_differently_are_refused_at_their_line(tmp_path, layout, tail, message):
    good = '{"text": "p", "standard_answer": "r"}'
    rows = [good, ROW + tail]
    text = "\n".join(rows) + "\n" if layout == "jsonl" else "[\n" + ",\n".join(rows) + "\n]\n"
    path = tmp_path / f"rows.{layout}"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError) as caught:
        load_test_set(str(path))
    assert caught.value.message.startswith(f"{path}:{2 if layout == 'jsonl' else 3}: "), caught.value.message
    assert message in caught.value.message
