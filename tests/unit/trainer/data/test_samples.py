"""Every sample format in tests/fixtures/data reads into canonical rows, with the format it was detected as."""

from __future__ import annotations

import hashlib
import json

import pytest

from kubetune_trainer.data.prepare import fingerprint

from .conftest import pref, write_jsonl


@pytest.mark.parametrize(
    ("flags", "fmt", "kind", "kept", "dropped"),
    [
        (["--source", "trl/preference.jsonl"], "trl", "preference", 6, {"duplicate": 4}),
        (["--source", "cvalues/train.jsonl"], "cvalues", "preference", 6, {"duplicate": 4}),
        (["--source", "sharegpt/pref.json"], "sharegpt", "preference", 6, {}),
        (
            ["--dataset-info", "sharegpt/dataset_info.json", "--dataset", "pref_sharegpt"],
            "llamafactory",
            "preference",
            6,
            {},
        ),
        (
            ["--dataset-info", "llamafactory/dataset_info.json", "--dataset", "generalized_dpo_preference_dataset"],
            "llamafactory",
            "preference",
            12,
            {},
        ),
        (["--source", "llamafactory/generalized_dpo_preference_dataset.json"], "alpaca", "preference", 12, {}),
        (["--source", "llamafactory/test.json"], "replay", "sft", 6, {}),
        (["--source", "defects/raw"], "defects-raw", "sft", 16, {}),
        (["--source", "defects/sft_chat.jsonl"], "chat-sft", "sft", 16, {}),
        (["--source", "tools/glaive_toolcall.json"], "sharegpt", "sft", 6, {}),
        (["--dataset-info", "tools/dataset_info.json", "--dataset", "glaive_toolcall"], "llamafactory", "sft", 6, {}),
        (["--source", "tools/trl_tools.jsonl"], "trl", "sft", 4, {}),
        (["--source", "llamafactory_v1/sft.jsonl"], "llamafactory-v1", "sft", 6, {}),
        (["--source", "llamafactory_v1/dpo.jsonl"], "llamafactory-v1", "preference", 6, {}),
        (["--source", "content_parts/openai.jsonl"], "trl", "sft", 4, {}),
        (["--source", "kto/trl_unpaired.jsonl"], "trl", "kto", 16, {}),
        (["--source", "kto/llamafactory_kto.json"], "trl", "kto", 6, {}),
        (["--dataset-info", "kto/dataset_info.json", "--dataset", "kto_demo"], "llamafactory", "kto", 6, {}),
    ],
)
def test_every_sample_reads(prepare, sample_data, flags, fmt, kind, kept, dropped):
    flags = [str(sample_data / f) if f.endswith((".json", ".jsonl", "raw")) else f for f in flags]
    result = prepare(*flags, "--kind", kind)
    assert result.rc == 0
    manifest = result.manifest
    assert manifest["format"] == fmt
    assert manifest["format_evidence"]
    assert manifest["counts"]["kept"] == kept == manifest["counts"]["train"] + manifest["counts"]["test"]
    assert manifest["dropped"] == dropped
    rows = result.all_rows()
    assert len(rows) == kept
    answer = {"preference": "chosen", "kto": "completion"}
    for row in rows:
        conversation = row["prompt"] + row[answer[kind]] if kind in answer else row["messages"]
        assert conversation[-1]["role"] == "assistant"
        for message in conversation:
            assert set(message) <= {"role", "content", "tool_calls", "name", "loss_weight"}
            assert message["content"].strip() or message.get("tool_calls")
        assert kind != "kto" or type(row["label"]) is bool
        path, line = row["metadata"]["source"].rsplit(":", 1)
        assert path.startswith(str(sample_data)) and int(line) >= 1


def test_cvalues_history_is_shared_and_scores_travel_in_metadata(prepare, sample_data):
    rows = prepare("--source", sample_data / "cvalues/train.jsonl", "--kind", "preference").all_rows()
    first = next(r for r in rows if r["metadata"]["source"].endswith(":1"))
    assert first["prompt"] == [
        {"role": "user", "content": "我想问一下天气"},
        {"role": "assistant", "content": "好的，请问具体是哪方面？"},
        {"role": "user", "content": "就是最新情况"},
    ]
    assert first["chosen"] == [{"role": "assistant", "content": "今天北京晴，最高气温25度。"}]
    assert first["metadata"]["chosen_score"] == 0.8
    assert first["metadata"]["rejected_score"] == 0.05


def test_alpaca_prompt_joins_instruction_and_input_like_llamafactory(prepare, sample_data):
    result = prepare(
        "--dataset-info", sample_data / "llamafactory/dataset_info.json",
        "--dataset", "generalized_dpo_preference_dataset", "--kind", "preference",
    )
    first = next(r for r in result.all_rows() if r["metadata"]["source"].endswith(":2"))
    assert first["prompt"] == [{"role": "user", "content": "请回答用户关于天气的问题。\ncase-0: 天气?"}]
    assert "formatting alpaca, ranking true" in result.manifest["format_evidence"]


def test_defect_records_convert_to_the_workflow_chat_exactly(prepare, sample_data):
    converted = prepare("--source", sample_data / "defects/raw", "--kind", "sft").all_rows()
    reference = [json.loads(line) for line in (sample_data / "defects/sft_chat.jsonl").read_text().splitlines()]

    def key(messages, subtype):
        return json.dumps(messages, ensure_ascii=False), subtype

    assert sorted(key(r["messages"], r["metadata"]["subtype"]) for r in converted) == sorted(
        key(r["text"], r["subtype"]) for r in reference
    )


def test_replay_set_publishes_a_test_split(prepare, sample_data):
    result = prepare("--source", sample_data / "llamafactory/test.json", "--kind", "sft", "--test-fraction", "1")
    assert result.manifest["counts"] == {"train": 0, "test": 6, "read": 6, "kept": 6, "dropped": 0}
    first = result.rows("test")[0]
    assert first["messages"] == [
        {"role": "user", "content": "case-0: 天气?"},
        {"role": "assistant", "content": "今天北京晴，最高气温25度。"},
    ]


def test_stratified_split_puts_every_subtype_in_test(prepare, sample_data):
    result = prepare(
        "--source", sample_data / "defects/sft_chat.jsonl", "--kind", "sft",
        "--stratify-by", "subtype", "--test-fraction", "0.2",
    )
    strata = result.manifest["strata"]
    assert set(strata) == {"空指针", "越界访问", "资源泄漏", "除零"}
    assert all(counts == {"train": 3, "test": 1} for counts in strata.values())
    assert result.termination["strata"] == strata


def test_manifest_names_every_file_with_its_sha256_and_the_fingerprint_covers_them(prepare, sample_data):
    result = prepare("--source", sample_data / "trl/preference.jsonl", "--kind", "preference")
    manifest = result.manifest
    actual = {name: hashlib.sha256((result.output / name).read_bytes()).hexdigest() for name in manifest["files"]}
    assert set(actual) == {"train.jsonl", "test.jsonl"}
    assert manifest["files"] == actual
    assert manifest["fingerprint"] == fingerprint(actual)
    assert sorted(p.name for p in result.output.iterdir()) == ["manifest.json", "test.jsonl", "train.jsonl"]
    assert manifest["dropped"] == {"duplicate": 4}
    assert [e["source"].rsplit("/", 1)[1] for e in manifest["drop_examples"]] == [
        f"preference.jsonl:{n}" for n in (7, 8, 9, 10)
    ]
    assert set(manifest["lengths"]) == {"prompt", "answer", "chosen", "rejected"}
    assert set(manifest["lengths"]["prompt"]) == {"min", "mean", "p50", "p95", "max"}
    assert manifest["options"]["seed"] == 42


def test_fingerprint_is_deterministic_and_follows_the_split(prepare, sample_data):
    source = ["--source", sample_data / "llamafactory/generalized_dpo_preference_dataset.json", "--kind", "preference"]
    first = prepare(*source, "--test-fraction", "0.25").manifest
    again = prepare(*source, "--test-fraction", "0.25").manifest
    reseeded = prepare(*source, "--test-fraction", "0.25", "--seed", "7").manifest
    assert first["fingerprint"] == again["fingerprint"]
    assert first["files"] == again["files"]
    assert reseeded["fingerprint"] != first["fingerprint"]
    assert reseeded["counts"] == first["counts"]


def test_termination_summary_has_the_dataset_shape(prepare, sample_data):
    result = prepare("--source", sample_data / "trl/preference.jsonl", "--kind", "preference")
    summary = result.termination
    assert summary["kind"] == "dataset"
    assert summary["output"] == f"file://{result.output}"
    assert summary["format"] == "trl"
    assert "TRL preference" in summary["formatEvidence"]
    assert summary["fingerprint"] == result.manifest["fingerprint"]
    assert summary["counts"] == {"train": result.manifest["counts"]["train"], "test": result.manifest["counts"]["test"]}
    assert summary["dropped"] == {"duplicate": 4}
    assert set(summary["lengths"]) == {"prompt", "answer"}


def test_rows_without_the_stratify_field_form_their_own_stratum(prepare, tmp_path, capsys):
    rows = [pref(f"q{i}", subtype="a" if i % 2 else None) for i in range(6)]
    for row in rows:
        if row["subtype"] is None:
            del row["subtype"]
    source = write_jsonl(tmp_path / "rows.jsonl", rows)
    result = prepare("--source", source, "--kind", "preference", "--stratify-by", "subtype", "--test-fraction", "0.3")
    assert result.manifest["strata"] == {"<missing>": {"train": 2, "test": 1}, "a": {"train": 2, "test": 1}}
    assert prepare("--source", source, "--kind", "preference", "--stratify-by", "subtyp").rc == 65
    assert "--stratify-by subtyp: no row has this metadata field" in capsys.readouterr().err
