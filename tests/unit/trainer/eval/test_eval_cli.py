"""`kubetune-trainer eval --config FILE` end to end: the tiny model on the HF engine, S3 output, exit codes."""

from __future__ import annotations

import importlib.util
import json

import pytest
import yaml

from kubetune_trainer import storage
from kubetune_trainer.cli import main


@pytest.fixture
def termination_log(tmp_path, monkeypatch):
    path = tmp_path / "termination-log"
    monkeypatch.setenv("KUBETUNE_TERMINATION_LOG", str(path))
    monkeypatch.setenv("KUBETUNE_METRICS_PORT", "0")
    monkeypatch.delenv("KUBETUNE_PROGRESS_URL", raising=False)
    return path


def write_config(tmp_path, **config) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return str(path)


def test_base_adapter_and_chain_adapter_on_the_hf_engine_to_s3(
    tmp_path, sample_data, lineage_models, s3_bucket, termination_log, capsys
):
    output = f"s3://{s3_bucket}/llm-team/evalruns/chain"
    config = write_config(
        tmp_path,
        output=output,
        test_set=str(sample_data / "llamafactory" / "test.json"),
        candidates=[
            {"name": "base", "model": f"file://{lineage_models.base}", "baseline": True},
            {"name": "sft", "adapter": f"file://{lineage_models.sft}"},
            {"name": "dpo", "adapter": f"file://{lineage_models.dpo}"},
        ],
        max_new_tokens=6,
        batch_size=4,
        bootstrap_samples=100,
        gates=[
            {
                "name": "exact",
                "metric": "exact_match",
                "candidate": "dpo",
                "comparator": ">=",
                "threshold": 0.99,
            }
        ],
    )
    # A failed gate is a result, not an error: the operator reads it from the termination message.
    assert main(["eval", "--config", config]) == 0
    message = json.loads(termination_log.read_text(encoding="utf-8"))
    assert message["kind"] == "eval" and message["passed"] is False
    assert message["report"] == f"{output}/report.html"
    assert [g["name"] for g in message["gates"]] == ["exact"]
    assert set(message["metrics"]) == {"base", "sft", "dpo"}
    assert "gate FAILED: exact" in capsys.readouterr().out

    stored = {storage.relative(output, uri) for uri in storage.list_files(output)}
    manifest = json.loads(storage.read_text(f"{output}/manifest.json"))
    assert stored == set(manifest["files"]) | {"manifest.json"}
    summary = json.loads(storage.read_text(f"{output}/summary.json"))
    dpo = next(c for c in summary["candidates"] if c["name"] == "dpo")
    assert dpo["trueBase"]["mergedAdapters"] == [
        {"uri": f"file://{lineage_models.sft}", "sha256": lineage_models.sft_sha}
    ]
    assert summary["counts"] == {"prompts": 6, "candidates": 3}
    assert summary["throughput"]["prompts"] == 18 and summary["throughput"]["promptsPerSecond"] > 0
    predictions = [json.loads(line) for line in storage.read_text(f"{output}/predictions.jsonl").splitlines()]
    assert all(0 < p["new_tokens"] <= 6 for p in predictions)


def test_the_seed003_pitfall_exits_70_with_the_needed_base(
    tmp_path, sample_data, lineage_models, termination_log, capsys
):
    config = write_config(
        tmp_path,
        output=str(tmp_path / "out"),
        test_set=str(sample_data / "llamafactory" / "test.json"),
        candidates=[
            {"name": "base", "model": str(lineage_models.base)},
            {"name": "dpo", "adapter": str(lineage_models.dpo), "model": str(lineage_models.base)},
        ],
    )
    assert main(["eval", "--config", config]) == 70
    error = capsys.readouterr().err
    assert "candidates[1] (dpo): adapter" in error and f"+ file://{lineage_models.sft}" in error
    message = json.loads(termination_log.read_text())
    assert message["kind"] == "eval" and message["reason"] == "AdapterBaseMismatch"
    assert not (tmp_path / "out").exists()


def test_bad_config_and_bad_data_exit_64_and_65(tmp_path, lineage_models, termination_log, capsys):
    config = write_config(
        tmp_path, output="x", test_set="t.json", candidates=[{"name": "a", "model": "m"}], beams=2
    )
    assert main(["eval", "--config", config]) == 64
    assert "beams: unknown field" in capsys.readouterr().err
    assert json.loads(termination_log.read_text())["reason"] == "BadConfig"

    broken = tmp_path / "test.jsonl"
    broken.write_text('{"text": "q", "standard_answer": "a"}\n{"text": \n', encoding="utf-8")
    config = write_config(
        tmp_path,
        output=str(tmp_path / "o"),
        test_set=str(broken),
        candidates=[{"name": "a", "model": str(lineage_models.base)}],
    )
    assert main(["eval", "--config", config]) == 65
    assert f"{broken}:2: not valid JSON" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_an_evalrun_written_for_vllm_runs_on_the_hf_engine_here(
    tmp_path, sample_data, lineage_models, termination_log
):
    config = write_config(
        tmp_path,
        output=str(tmp_path / "out"),
        test_set=str(sample_data / "llamafactory" / "test.json"),
        max_samples=2,
        candidates=[{"name": "base", "model": str(lineage_models.base)}],
        engine="vllm",
        beam_width=2,
        max_new_tokens=3,
        bootstrap_samples=10,
    )
    assert main(["eval", "--config", config]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
    assert (
        summary["warnings"][0]
        == "engine: vllm was asked for, but vLLM is not installed; the hf engine ran instead"
    )
    assert "the hf engine ran instead" in (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
