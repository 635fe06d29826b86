"""A corpus of deliberately broken files: exact drop counts by reason, and file:line in every message."""

from __future__ import annotations

import gzip
import json

import pytest

from kubetune_trainer.data import format_plan

from .conftest import pref, write_jsonl

BROKEN_JSONL = [
    json.dumps(pref("q1")),
    '{"prompt": [{"role": "user", "content": "q2"}], "chosen": ',
    json.dumps({k: v for k, v in pref("q3").items() if k != "rejected"}),
    json.dumps(pref("q4", good="   ")),
    json.dumps(pref("q5", good="same", bad="same")),
    json.dumps(pref("q6", good=5)),
    json.dumps(pref("q7") | {"prompt": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}),
    json.dumps(pref("q8", good="x" * 200)),
    json.dumps(pref("q1")),
    "[1, 2]",
    json.dumps(pref("q11") | {"prompt": [{"role": "robot", "content": "beep"}]}),
    "",
    json.dumps(pref("q13") | {"prompt": [{"role": "user", "content": "hi", "name": "ann"}]}),
    json.dumps(pref("q14") | {"chosen": 7}),
    json.dumps(pref("q15")),
]

BROKEN_CSV = 'prompt,chosen,rejected\n"What is\ntwo plus two?",four,five\nq2,only-two-fields\nq3,"",bad\n'

EXPECTED_DROPS = {
    "broken_json": ["broken.jsonl:2"],
    "broken_csv": ["broken.csv:4"],
    "not_an_object": ["broken.jsonl:10"],
    "missing_field": ["broken.jsonl:3"],
    "wrong_type": ["broken.jsonl:14"],
    "non_string_content": ["broken.jsonl:6"],
    "empty_content": ["broken.csv:5", "broken.jsonl:4"],
    "unknown_role": ["broken.jsonl:11"],
    "unsupported_field": ["broken.jsonl:13"],
    "wrong_role_order": ["broken.jsonl:7"],
    "chosen_equals_rejected": ["broken.jsonl:5"],
    "too_long": ["broken.jsonl:8"],
    "duplicate": ["broken.jsonl:9"],
}


@pytest.fixture
def corpus(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "broken.jsonl").write_text("\n".join(BROKEN_JSONL) + "\n")
    (folder / "broken.csv").write_text(BROKEN_CSV)
    return folder


def test_each_bad_row_is_dropped_with_its_reason_file_and_line(prepare, corpus):
    result = prepare(
        "--source", corpus, "--kind", "preference", "--format", "trl",
        "--max-length", "100", "--max-drop-fraction", "1",
    )
    assert result.rc == 0
    manifest = result.manifest
    assert manifest["dropped"] == {reason: len(places) for reason, places in EXPECTED_DROPS.items()}
    found: dict[str, list[str]] = {}
    for example in manifest["drop_examples"]:
        found.setdefault(example["reason"], []).append(example["source"].rsplit("/", 1)[1])
    assert found == EXPECTED_DROPS
    assert manifest["counts"]["read"] == 17
    kept = sorted(row["prompt"][-1]["content"] for row in result.all_rows())
    assert kept == ["What is\ntwo plus two?", "q1", "q15"]
    details = {e["reason"]: e["detail"] for e in manifest["drop_examples"]}
    assert details["missing_field"] == "rejected is missing"
    assert details["non_string_content"] == "chosen[0].content is a number, not a string"
    assert details["unknown_role"].startswith("prompt[0].role is 'robot'")
    assert details["too_long"] == "202 characters of prompt and answer (--max-length 100)"
    assert details["broken_csv"] == "2 fields where the header has 3"


def test_bad_rows_are_logged_with_file_and_line(prepare, corpus, caplog):
    prepare("--source", corpus / "broken.jsonl", "--kind", "preference", "--max-drop-fraction", "1")
    assert any("broken.jsonl:2: dropped (broken_json)" in message for message in caplog.messages)


def test_too_many_bad_rows_fail_naming_the_first_ones(prepare, tmp_path, capsys):
    rows = [json.dumps(pref(f"q{i}")) for i in range(10)]
    rows[3] = "{not json"
    (tmp_path / "a.jsonl").write_text("\n".join(rows) + "\n")
    result = prepare("--source", tmp_path / "a.jsonl", "--kind", "preference")
    assert result.rc == 65
    error = capsys.readouterr().err
    assert "1 of 10 rows are bad (10.0% > --max-drop-fraction 5.0%)" in error
    assert f"{tmp_path / 'a.jsonl'}:4: broken_json" in error
    assert result.termination["kind"] == "dataset"
    assert result.termination["reason"] == "BadData"
    assert "a.jsonl:4" in result.termination["error"]
    assert not result.output.exists()


def test_a_bad_share_under_the_threshold_is_dropped_and_counted(prepare, tmp_path):
    rows = [json.dumps(pref(f"q{i}")) for i in range(30)] + ['{"prompt": "cut']
    (tmp_path / "a.jsonl").write_text("\n".join(rows) + "\n")
    result = prepare("--source", tmp_path / "a.jsonl", "--kind", "preference")
    assert result.rc == 0
    assert result.manifest["dropped"] == {"broken_json": 1}
    assert result.manifest["counts"]["kept"] == 30


def test_duplicates_and_length_filter_do_not_count_as_bad(prepare, tmp_path):
    rows = [pref(f"q{i}") for i in range(4)] * 3 + [pref("long", good="y" * 500)]
    result = prepare(
        "--source", write_jsonl(tmp_path / "a.jsonl", rows), "--kind", "preference",
        "--max-length", "100", "--on-bad-rows", "fail",
    )
    assert result.rc == 0
    assert result.manifest["dropped"] == {"too_long": 1, "duplicate": 8}


def test_no_dedupe_keeps_repeats_together(prepare, tmp_path):
    rows = [pref(f"q{i}") for i in range(20)] * 2
    result = prepare(
        "--source", write_jsonl(tmp_path / "a.jsonl", rows), "--kind", "preference",
        "--no-dedupe", "--test-fraction", "0.3",
    )
    assert result.manifest["counts"]["kept"] == 40
    train = {row["prompt"][0]["content"] for row in result.rows("train")}
    test = {row["prompt"][0]["content"] for row in result.rows("test")}
    assert train and test and not train & test


def test_fail_policy_stops_at_the_first_bad_row(prepare, corpus, capsys):
    result = prepare("--source", corpus / "broken.jsonl", "--kind", "preference", "--on-bad-rows", "fail")
    assert result.rc == 65
    assert f"{corpus / 'broken.jsonl'}:2: broken_json: not valid JSON" in capsys.readouterr().err


def test_a_corrupt_gzip_file_fails_naming_it_and_the_last_line_read(prepare, tmp_path, capsys):
    good = "".join(json.dumps(pref(f"q{i}")) + "\n" for i in range(50)).encode()
    packed = gzip.compress(good)
    (tmp_path / "cut.jsonl.gz").write_bytes(packed[: len(packed) // 2])
    result = prepare("--source", tmp_path / "cut.jsonl.gz", "--kind", "preference")
    assert result.rc == 65
    error = capsys.readouterr().err
    assert f"{tmp_path / 'cut.jsonl.gz'}: not a readable gzip stream after line" in error
    assert result.termination["reason"] == "BadData"


def test_a_gzip_that_is_not_gzip_fails_naming_it(prepare, tmp_path, capsys):
    (tmp_path / "fake.jsonl.gz").write_text(json.dumps(pref("q")) + "\n")
    assert prepare("--source", tmp_path / "fake.jsonl.gz", "--kind", "preference").rc == 65
    assert "fake.jsonl.gz: not a readable gzip stream after line 0" in capsys.readouterr().err


def test_a_broken_json_array_fails_at_its_line(prepare, tmp_path, capsys):
    items = ",\n".join(json.dumps(pref(f"q{i}"), indent=1) for i in range(3))
    text = "[\n" + items.replace('"q1"', '"q1" oops', 1) + "\n]\n"
    (tmp_path / "array.json").write_text(text)
    result = prepare("--source", tmp_path / "array.json", "--kind", "preference")
    assert result.rc == 65
    line = text.splitlines().index(next(x for x in text.splitlines() if "oops" in x)) + 1
    assert f"{tmp_path / 'array.json'}:{line}: not valid JSON" in capsys.readouterr().err


def test_nothing_usable_is_an_error_naming_the_reasons(prepare, tmp_path, capsys):
    write_jsonl(tmp_path / "a.jsonl", [{"question": "no known field"}, {"prompt": 1, "chosen": "a", "rejected": "b"}])
    result = prepare("--source", tmp_path / "a.jsonl", "--kind", "preference", "--format", "trl")
    assert result.rc == 65
    error = capsys.readouterr().err
    assert "no usable rows: all 2 rows were dropped (missing_field 1, wrong_type 1)" in error
    assert f"{tmp_path / 'a.jsonl'}:1: missing_field: prompt is missing" in error


def test_an_unrecognisable_file_asks_for_format(prepare, tmp_path, capsys):
    write_jsonl(tmp_path / "a.jsonl", [{"question": "q", "answer": "a"}])
    assert prepare("--source", tmp_path / "a.jsonl", "--kind", "sft").rc == 65
    assert f"{tmp_path / 'a.jsonl'}:1: cannot tell the format from records with keys answer, question" in (
        capsys.readouterr().err
    )


def test_long_values_in_bad_rows_are_cut_short_so_the_error_reaches_the_operator(prepare, tmp_path, capsys):
    stray = "user: " + "很长的文本" * 400
    write_jsonl(tmp_path / "a.jsonl", [pref("q") | {"prompt": [{"role": stray, "content": "q"}]}] * 6)
    result = prepare("--source", tmp_path / "a.jsonl", "--kind", "preference", "--no-dedupe")
    assert result.rc == 65
    error = capsys.readouterr().err
    assert f"{tmp_path / 'a.jsonl'}:1: unknown_role: prompt[0].role is 'user: 很长的文本" in error
    assert len(error) < 2000
    assert result.termination["reason"] == "BadData"
    assert result.termination["error"].startswith("no usable rows")


def test_a_record_with_many_keys_is_named_by_a_few_of_them(prepare, tmp_path, capsys):
    (tmp_path / "map.json").write_text(json.dumps({f"key{i:04}": i for i in range(2000)}))
    result = prepare("--source", tmp_path / "map.json", "--kind", "preference")
    assert result.rc == 65
    assert "records with keys key0000, key0001, key0002, key0003, key0004, key0005, key0006, key0007, " in (
        capsys.readouterr().err
    )
    assert "(2000 keys)" in result.termination["error"]


def test_a_lone_surrogate_in_a_json_array_is_named_as_unwritable_text(prepare, tmp_path):
    (tmp_path / "a.json").write_text('[{"prompt": "q\\ud800", "chosen": "a", "rejected": "b"},\n'
                                     '{"prompt": "q2", "chosen": "a", "rejected": "b"}]')
    result = prepare("--source", tmp_path / "a.json", "--kind", "preference", "--max-drop-fraction", "1")
    [example] = result.manifest["drop_examples"]
    assert example["reason"] == "unsupported_field"
    assert example["detail"].startswith("cannot be written as UTF-8 JSON (str is not valid UTF-8: surrogates")


def test_a_file_of_no_json_objects_stops_detection_early(prepare, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(format_plan, "DETECTION_RECORDS", 50)
    (tmp_path / "a.jsonl").write_text("not json\n" * 60 + json.dumps(pref("q")) + "\n")
    result = prepare("--source", tmp_path / "a.jsonl", "--kind", "preference")
    assert result.rc == 65
    assert f"{tmp_path / 'a.jsonl'}:50: cannot tell the format: the first 50 records hold no JSON object" in (
        capsys.readouterr().err
    )
