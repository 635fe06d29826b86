"""The command line: flags checked with BadConfig, no tracebacks, progress events, metrics, republishing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from prometheus_client import REGISTRY

from kubetune_trainer.data.cli import MAX_WARNINGS, WARNING_LENGTH, clip_warnings, summary
from kubetune_trainer.progress import write_termination_summary
from tests.conftest import subprocess_env

from .conftest import pref, write_jsonl


@pytest.fixture
def pairs(tmp_path):
    return write_jsonl(tmp_path / "pairs.jsonl", [pref(f"q{i}") for i in range(20)])


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--kind", "dpo"], "--kind must be preference, sft or kto, not 'dpo'"),
        (["--kind", "sft", "--test-fraction", "2"], "--test-fraction must be between 0 and 1, not 2.0"),
        (["--kind", "sft", "--seed", "x"], "--seed must be an integer, not 'x'"),
        (["--kind", "sft", "--seed", str(2**64)], f"--seed must be below 2**64, not {2**64}"),
        (["--kind", "sft", "--max-rows", "0"], "--max-rows must be 1 or more, not 0"),
        (["--kind", "sft", "--format", "xml"], "--format must be auto or one of trl, "),
        (["--kind", "sft", "--on-bad-rows", "skip"], "--on-bad-rows must be drop or fail, not 'skip'"),
        (["--kind", "sft", "--dataset-info", "x.json"], "--dataset-info and --dataset go together"),
        (["--kind", "sft", "--format", "llamafactory"], "--format llamafactory needs --dataset-info"),
        (["--kind", "sft", "--format", "cvalues", "--column-map", "{}"], "--format cvalues does not read"),
        (["--kind", "preference", "--format", "chat-sft"], "--format chat-sft holds sft rows, but --kind is preference"),
        (["--kind", "sft", "--stratify-by", " "], "--stratify-by names a metadata field"),
    ],
)
def test_bad_flags_exit_with_bad_config_naming_the_flag(prepare, pairs, capsys, flags, message):
    result = prepare("--source", pairs, *flags)
    assert result.rc == 64
    assert message in capsys.readouterr().err
    assert result.termination == {"kind": "dataset", "error": result.termination["error"], "reason": "BadConfig"}
    assert message in result.termination["error"]


def test_unwritable_or_malformed_outputs_fail_before_reading(prepare, pairs, tmp_path, capsys):
    (tmp_path / "a-file").write_text("")
    assert prepare("--source", pairs, "--kind", "preference", output=tmp_path / "a-file").rc == 64
    assert "exists and is not a directory" in capsys.readouterr().err
    assert prepare("--source", pairs, "--kind", "preference", output="gs://bucket/x").rc == 64
    assert "--output gs://bucket/x: unsupported URI scheme 'gs'" in capsys.readouterr().err
    assert prepare("--source", "s3:///key", "--kind", "preference").rc == 64
    assert "--source s3:///key: an s3:// URI needs a bucket" in capsys.readouterr().err


def test_source_is_required_without_dataset_info(prepare, capsys):
    assert prepare("--kind", "sft").rc == 64
    assert "--source is required" in capsys.readouterr().err


def test_auto_detection_refuses_the_wrong_kind(prepare, pairs, capsys):
    assert prepare("--source", pairs, "--kind", "sft").rc == 64
    assert f"{pairs}:1 holds preference rows (trl: prompt/chosen/rejected" in capsys.readouterr().err


def test_files_of_different_formats_are_not_mixed(prepare, pairs, tmp_path, capsys):
    other = write_jsonl(tmp_path / "other.jsonl", [{"instruction": "i", "chosen": "a", "rejected": "b"}])
    assert prepare("--source", pairs, "--source", other, "--kind", "preference").rc == 64
    assert f"{other}:1 looks like alpaca preference rows" in capsys.readouterr().err


def test_progress_events_metrics_and_max_rows(prepare, pairs, tmp_path, monkeypatch):
    events = tmp_path / "progress.jsonl"
    monkeypatch.setenv("KUBETUNE_PROGRESS_FILE", str(events))
    kept_before = REGISTRY.get_sample_value("kubetune_data_rows_total", {"outcome": "kept"}) or 0.0
    result = prepare("--source", pairs, "--kind", "preference", "--max-rows", "12")
    assert result.rc == 0
    assert result.manifest["counts"]["kept"] == 12
    assert REGISTRY.get_sample_value("kubetune_data_rows_total", {"outcome": "kept"}) - kept_before == 12
    phases = [json.loads(line) for line in events.read_text().splitlines()]
    assert phases[0]["phase"] == "data" and phases[-1]["phase"] == "done"
    assert any(e.get("step") == 12 and e["phase"] == "data" for e in phases)


def test_republishing_replaces_the_dataset_and_leaves_no_scratch(prepare, pairs, tmp_path, monkeypatch):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("KUBETUNE_CACHE_DIR", str(scratch))
    output = tmp_path / "dataset"
    first = prepare("--source", pairs, "--kind", "preference", output=output).manifest
    second = prepare("--source", pairs, "--kind", "preference", "--seed", "1", output=output).manifest
    assert first["fingerprint"] != second["fingerprint"]
    assert json.loads((output / "manifest.json").read_text())["fingerprint"] == second["fingerprint"]
    assert sorted(p.name for p in output.iterdir()) == ["manifest.json", "test.jsonl", "train.jsonl"]
    assert list(scratch.iterdir()) == []


def test_the_installed_command_reports_errors_without_a_traceback(tmp_path, pairs):
    (tmp_path / "bad.jsonl").write_text("{broken\n")
    env = subprocess_env(KUBETUNE_TERMINATION_LOG=str(tmp_path / "term"))
    command = [sys.executable, "-m", "kubetune_trainer", "data", "prepare", "--kind", "preference"]
    failed = subprocess.run([*command, "--source", str(tmp_path / "bad.jsonl"), "--output", str(tmp_path / "o1")],
                            capture_output=True, text=True, env=env, timeout=120)
    assert failed.returncode == 65
    assert "Traceback" not in failed.stderr
    assert f"{tmp_path / 'bad.jsonl'}:1: broken_json" in failed.stderr
    done = subprocess.run([*command, "--source", str(pairs), "--output", str(tmp_path / "o2")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "published file://" in done.stdout and "format trl" in done.stdout
    assert json.loads((tmp_path / "term").read_text())["kind"] == "dataset"


def bulky_manifest(warnings: list[str]) -> dict:
    stats = {"min": 1, "mean": 12.5, "p50": 12.0, "p95": 30.0, "max": 99}
    return {
        "format": "trl", "format_evidence": "first rows have prompt, chosen and rejected message lists",
        "fingerprint": "sha256:" + "0" * 64, "counts": {"train": 900, "test": 100},
        "dropped": {f"reason_{i}": i for i in range(40)},
        "strata": {f"subtype-{i:03d}": {"train": 9, "test": 1} for i in range(200)},
        "lengths": {"prompt": stats, "answer": stats},
        "warnings": warnings,
    }


def test_the_summary_keeps_the_first_warnings_clipped_and_drops_bulkier_keys_first(tmp_path):
    warnings = [f"subtype 'subtype-{i:03d}' has no row in train: " + "x" * 1000 for i in range(30)]
    written = write_termination_summary(summary(bulky_manifest(warnings), "s3://b/ds"), str(tmp_path / "log"))
    assert len(written.encode("utf-8")) <= 4096
    message = json.loads(written)
    assert message["truncated"] is True and "strata" not in message
    assert len(message["warnings"]) == MAX_WARNINGS
    assert all(len(w) <= WARNING_LENGTH for w in message["warnings"])
    assert message["warnings"][0].startswith("subtype 'subtype-000' has no row in train: xxx")
    assert message["warnings"][0].endswith("…")
    assert message["warnings"][-1] == f"… and {30 - MAX_WARNINGS + 1} more warnings in manifest.json"


def test_a_summary_without_warnings_has_an_empty_list(tmp_path):
    message = json.loads(write_termination_summary(summary(bulky_manifest([]), "s3://b/ds"), str(tmp_path / "log")))
    assert message["warnings"] == []
    assert clip_warnings(["short"] * MAX_WARNINGS) == ["short"] * MAX_WARNINGS
