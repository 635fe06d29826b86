import json

from kubetune_trainer.progress import TERMINATION_LIMIT, write_termination_summary


def test_optional_details_go_first_when_the_summary_is_too_long(tmp_path):
    target = tmp_path / "termination-log"
    text = write_termination_summary(
        {"kind": "train", "output": "s3://b/x", "steps": 3, "timings": {"a" * 5000: 1}, "_optional": ["timings"]},
        str(target),
    )
    assert json.loads(target.read_text()) == json.loads(text) == {
        "kind": "train", "output": "s3://b/x", "steps": 3, "truncated": True
    }


def test_a_long_failure_keeps_its_reason_and_the_start_of_its_message(tmp_path):
    error = 'row 1: "quoted"\n' + "字" * 3000
    text = write_termination_summary(
        {"kind": "dataset", "error": error, "reason": "BadData"}, str(tmp_path / "log")
    )
    summary = json.loads(text)
    assert len(text.encode("utf-8")) <= TERMINATION_LIMIT
    assert summary["reason"] == "BadData" and summary["truncated"] is True
    assert summary["error"].startswith('row 1: "quoted"\n字') and summary["error"].endswith(" …")
