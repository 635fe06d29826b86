"""Termination summaries (contracts §5) → status fields that fit the CRD schema; misshapen parts are
left out rather than failing the status patch."""

from __future__ import annotations

import pytest

from kubetune_operator.api import EvalRun
from kubetune_operator.api.preferencedataset import (
    STATUS_WARNING_LENGTH,
    STATUS_WARNINGS_LIMIT,
    PreferenceDatasetStatus,
)
from kubetune_operator.handlers.evalrun import eval_status
from kubetune_operator.handlers.finetunejob import training_status
from kubetune_operator.handlers.preferencedataset import dataset_status


def test_dataset_summary_fills_counts_strata_lengths_and_artifacts():
    fields = dataset_status({
        "kind": "dataset", "output": "s3://b/ds/", "format": "trl", "formatEvidence": "prompt/chosen/rejected",
        "fingerprint": "sha256:" + "0" * 64, "counts": {"train": 9, "test": 1}, "dropped": {"duplicate": 2},
        "strata": {"a": {"train": 1, "test": 1}, "b": "not counts"},
        "lengths": {"prompt": {"min": 1, "mean": 2.5, "p50": 2, "p95": 4, "max": 5}, "answer": {"min": "short"}},
    }, "s3://default")
    assert fields["artifacts"] == {"uri": "s3://b/ds", "manifest": "s3://b/ds/manifest.json"}
    assert fields["strata"] == {"a": {"train": 1, "test": 1}}
    assert fields["promptLength"]["p95"] == 4 and "answerLength" not in fields
    assert fields["dropped"] == {"duplicate": 2}
    PreferenceDatasetStatus.model_validate(fields)


def test_dataset_warnings_are_kept_clipped_and_bounded_leaving_out_non_strings():
    fields = dataset_status({"warnings": ["subtype 'a' has no row in train", 7, "x" * 5000, *["w"] * 20]}, "s3://o")
    assert fields["warnings"][:2] == ["subtype 'a' has no row in train", "x" * (STATUS_WARNING_LENGTH - 1) + "…"]
    assert len(fields["warnings"]) == STATUS_WARNINGS_LIMIT
    PreferenceDatasetStatus.model_validate(fields)
    assert "warnings" not in dataset_status({"warnings": []}, "s3://o")
    assert "warnings" not in dataset_status({"warnings": "subtype 'a' has no row in train"}, "s3://o")


def test_dataset_fields_past_the_status_bounds_or_of_the_wrong_type_are_left_out():
    """Held against PreferenceDatasetStatus: a value the CRD would refuse would fail the whole patch."""
    fields = dataset_status({
        "format": "x" * 65, "formatEvidence": 3, "fingerprint": "sha256:" + "0" * 200,
        "dropped": {"duplicate": "2"}, "counts": {"train": True, "test": 1}, "lengths": [],
        "strata": {f"s{i}": {"train": 1, "test": 0} for i in range(300)},
    }, "s3://o")
    assert set(fields) == {"strata", "artifacts"}
    assert len(fields["strata"]) == 256
    PreferenceDatasetStatus.model_validate(fields)


def test_a_dataset_summary_without_output_points_at_the_default_location():
    assert dataset_status({}, "s3://root/ns/preferencedatasets/x")["artifacts"]["uri"] == "s3://root/ns/preferencedatasets/x"


def test_train_summary_fills_artifacts_and_true_base():
    fields = training_status({
        "output": "s3://b/ftj", "artifact": {"uri": "s3://b/ftj/final", "type": "adapter", "sha256": {"a": "1" * 64}},
        "merged": "s3://b/ftj/merged", "trueBase": {"baseModel": "s3://m", "mergedAdapters": [{"uri": "s3://sft/final"}]},
        "bestCheckpoint": "s3://b/ftj/checkpoints/checkpoint-000010", "bestEvalLoss": 0.25,
    }, "s3://default")
    assert fields["artifacts"] == {"uri": "s3://b/ftj/final", "type": "adapter", "mergedUri": "s3://b/ftj/merged",
                                   "manifest": "s3://b/ftj/manifest.json", "sha256": {"a": "1" * 64}}
    assert fields["trueBase"]["mergedAdapters"] == [{"uri": "s3://sft/final"}]
    assert fields["bestEvalLoss"] == 0.25


def test_train_summary_links_the_curves_and_the_tracker_runs():
    fields = training_status({
        "output": "s3://b/ftj",
        "plots": {"loss": "s3://b/ftj/plots/loss.png", "reward_margin": "s3://b/ftj/plots/reward_margin.png"},
        "tracking": {"mlflowRunId": "0123abcd", "mlflowExperimentId": "7", "tensorboard": "s3://b/ftj/tensorboard"},
    }, "s3://default")
    assert fields["artifacts"]["plots"] == {
        "loss": "s3://b/ftj/plots/loss.png", "rewardMargin": "s3://b/ftj/plots/reward_margin.png"}
    assert fields["tracking"] == {"mlflowRunId": "0123abcd", "mlflowExperimentId": "7", "tensorboard": "s3://b/ftj/tensorboard"}
    assert "tracking" not in training_status({"tracking": {}}, "s3://o")


def test_a_train_summary_of_the_wrong_shape_leaves_those_fields_out():
    fields = training_status({"artifact": {"type": "weights"}, "trueBase": "s3://m", "bestEvalLoss": True}, "s3://o")
    assert fields == {}


def evalrun():
    return EvalRun.model_validate({
        "metadata": {"name": "e", "namespace": "n"},
        "spec": {"testSet": {"uri": "s3://bkt/t.jsonl"},
                 "candidates": [{"name": "base", "model": "s3://models/base", "baseline": True}, {"name": "new", "model": "s3://models/new"}]},
    })


@pytest.mark.parametrize(
    ("tally", "expected"),
    [
        ({"passed": 30, "total": 30}, "29/30"),  # the listed failure outweighs the claim
        ({"passed": 0, "total": 30}, "0/30"),
        ({"passed": 2, "total": 1}, "1/2"),  # fewer than listed: the list counts
        ({"passed": True, "total": 30}, "1/2"),  # misshapen: ignored
        ("30/30", "1/2"),
    ],
)
def test_eval_summary_counts_gate_results_from_the_tally(tally, expected):
    fields = eval_status(evalrun(), {
        "gates": [{"name": "g1", "metric": "m", "candidate": "new", "value": 0.1, "threshold": 0.2, "comparator": ">=",
                   "passed": False},
                  {"name": "g2", "metric": "m", "candidate": "new", "value": 0.3, "threshold": 0.2, "comparator": ">=",
                   "passed": True}],
        "gateTally": tally,
    }, "s3://default")
    assert fields["gatesPassed"] == expected


def test_eval_summary_fills_results_gates_and_report():
    fields = eval_status(evalrun(), {
        "output": "s3://b/e", "report": "s3://b/e/report.html", "passed": False,
        "gates": [{"name": "g1", "metric": "m", "candidate": "new", "value": 0.1, "threshold": 0.2, "comparator": ">=",
                   "passed": False}, {"name": "broken"}],
        "metrics": {"base": {"m": {"value": 0.5, "ciLow": 0.4, "ciHigh": 0.6}}, "new": {"m": {"value": 0.1, "delta": -0.4}}},
    }, "s3://default")
    assert fields["gatesPassed"] == "0/2"  # the unreadable gate counts, as not passed
    assert [g["name"] for g in fields["gates"]] == ["g1"]
    assert {r["candidate"]: r["baseline"] for r in fields["results"]} == {"base": True, "new": False}
    assert fields["results"][1]["metrics"]["m"]["delta"] == -0.4
    assert (fields["report"], fields["artifacts"]) == ("s3://b/e/report.html", "s3://b/e")
