"""build_record / load_record: what the operator hands the promote Job, and what it refuses."""

from __future__ import annotations

import json

import pytest

from kubetune_operator.promotion.errors import PromotionRefused
from kubetune_operator.promotion.record import SCHEMA_VERSION, build_record, load_record

GATE = {
    "name": "pass-rate",
    "metric": "pass_rate",
    "candidate": "dpo",
    "value": 0.91,
    "threshold": 0.85,
    "comparator": ">=",
    "passed": True,
}
# Plain data as the operator keeps it in statuses (contracts §5 summaries).
EVAL_SUMMARY = {
    "kind": "eval",
    "output": "s3://artifacts/team-a/evalruns/support-eval",
    "report": "s3://artifacts/team-a/evalruns/support-eval/report.html",
    "passed": True,
    "gates": [GATE],
    "metrics": {"dpo": {"pass_rate": {"value": 0.91, "ciLow": 0.88, "ciHigh": 0.94}}},
}
ARTIFACT = {
    "uri": "s3://artifacts/team-a/finetunejobs/support-dpo/final",
    "type": "adapter",
    "sha256": {"adapter_model.safetensors": "a" * 64},
}
TRUE_BASE = {
    "baseModel": "s3://models/qwen2-0.5b",
    "mergedAdapters": [{"uri": "s3://artifacts/team-a/finetunejobs/support-sft/final", "sha256": "c" * 64}],
}
EVAL_RUN = {"namespace": "team-a", "name": "support-eval", "uid": "6f1c7c1e-uid"}


def build(**changes):
    arguments = {
        "adapter_name": "support-dpo",
        "candidate": "dpo",
        "eval_run": EVAL_RUN,
        "eval_summary": EVAL_SUMMARY,
        "adapter": ARTIFACT,
        "true_base": TRUE_BASE,
        "fine_tune_job": {"namespace": "team-a", "name": "support-dpo"},
        "lora_rank": 32,
    }
    return build_record(**{**arguments, **changes})


def test_a_passed_evalrun_becomes_a_json_able_record_with_its_evidence():
    record = build()

    assert json.loads(json.dumps(record)) == record
    assert record["schemaVersion"] == SCHEMA_VERSION
    assert record["action"] == "promote"
    assert record["adapter"] == {
        "name": "support-dpo",
        "uri": ARTIFACT["uri"],
        "sha256": ARTIFACT["sha256"],
        "trueBase": TRUE_BASE,
        "rank": 32,
        "fineTuneJob": {"namespace": "team-a", "name": "support-dpo"},
    }
    assert record["evalRun"] == {
        **EVAL_RUN,
        "candidate": "dpo",
        "passed": True,
        "gates": [GATE],
        "metrics": EVAL_SUMMARY["metrics"],
        "report": EVAL_SUMMARY["report"],
    }


def test_fields_the_eval_summary_adds_to_a_gate_are_kept():
    gate = {**GATE, "relativeToBaseline": True, "baselineValue": 0.72}

    record = build(eval_summary={**EVAL_SUMMARY, "gates": [gate]})

    assert record["evalRun"]["gates"] == [gate]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {
                "eval_summary": {
                    **EVAL_SUMMARY,
                    "passed": False,
                    "gates": [{**GATE, "value": 0.8, "passed": False}],
                }
            },
            "EvalRun team-a/support-eval failed its gates: pass-rate (pass_rate >= 0.85, got 0.8)",
        ),
        ({"eval_summary": {**EVAL_SUMMARY, "passed": False}}, "EvalRun team-a/support-eval did not pass"),
        ({"eval_summary": {**EVAL_SUMMARY, "gates": []}}, "has no gates"),
        ({"candidate": "sft"}, "has no metrics for candidate 'sft'"),
        ({"adapter": {**ARTIFACT, "type": "full"}}, "is a full model, not an adapter"),
        ({"adapter_name": "Support_DPO"}, "adapter.name: String should match pattern"),
        ({"adapter": {**ARTIFACT, "sha256": {}}}, "adapter.sha256: Dictionary should have at least 1 item"),
        (
            {"adapter": {**ARTIFACT, "sha256": {"adapter_model.safetensors": "nope"}}},
            "adapter.sha256.adapter_model",
        ),
        ({"eval_run": {"namespace": "team-a", "name": "support-eval"}}, "evalRun.uid: Field required"),
        ({"true_base": {}}, "adapter.trueBase.baseModel: Field required"),
        (
            {"eval_summary": {**EVAL_SUMMARY, "gates": [{**GATE, "comparator": "=="}]}},
            "evalRun.gates[0].comparator",
        ),
    ],
)
def test_a_record_that_must_not_be_promoted_is_refused_with_the_reason(changes, message):
    with pytest.raises(PromotionRefused, match=None) as refused:
        build(**changes)

    assert message in str(refused.value)
    assert refused.value.exit_code == 64


def test_load_record_names_the_file_line_and_column_of_broken_json(tmp_path):
    path = tmp_path / "record.json"
    path.write_text('{"schemaVersion": 1,\n "action": }')

    with pytest.raises(PromotionRefused, match=rf"{path} line 2 column 12: Expecting value"):
        load_record(path)


def test_load_record_names_an_unknown_field(tmp_path):
    path = tmp_path / "record.json"
    path.write_text(json.dumps({**build(), "promotedBy": "me"}))

    with pytest.raises(PromotionRefused, match=r"promotedBy: Extra inputs are not permitted"):
        load_record(path)


def test_load_record_refuses_a_newer_schema_version_by_name(tmp_path):
    path = tmp_path / "record.json"
    path.write_text(json.dumps({**build(), "schemaVersion": 2}))

    with pytest.raises(
        PromotionRefused, match=r"schemaVersion 2 is not supported; this kubetune reads and writes 1"
    ):
        load_record(path)


def test_a_rollback_section_only_goes_with_a_rollback(tmp_path):
    path = tmp_path / "record.json"
    path.write_text(json.dumps({**build(), "action": "rollback"}))

    with pytest.raises(PromotionRefused, match=r"action 'rollback' needs a 'rollback' section"):
        load_record(path)


def test_a_missing_record_file_is_named(tmp_path):
    with pytest.raises(PromotionRefused, match=r"record file .*missing.json: cannot be read"):
        load_record(tmp_path / "missing.json")
