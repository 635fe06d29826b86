"""Reading a Job's outcome from its conditions and its pods' termination messages, and what it sets."""

from __future__ import annotations

import json

from kubetune_operator.api.preferencedataset import LengthStats
from kubetune_operator.handlers.job_outcome import (
    JobOutcome,
    apply_outcome,
    conform,
    job_outcome,
    parse_summary,
)
from kubetune_operator.runtime.status import StatusDraft


def job(conditions=(), suspend=False, active=0, queue=None, **spec):
    labels = {"kueue.x-k8s.io/queue-name": queue} if queue else {}
    return {
        "metadata": {"name": "x-train", "labels": labels},
        "spec": {"suspend": suspend, "backoffLimit": 3, **spec},
        "status": {"active": active, "conditions": [{"type": t, "status": "True", "reason": r} for t, r in conditions]},
    }


def pod(phase, code=None, message=None, index="0", finished="2026-01-01T00:00:00Z"):
    state = {"terminated": {"exitCode": code, "message": message, "finishedAt": finished}} if code is not None else {}
    return {"metadata": {"annotations": {"batch.kubernetes.io/job-completion-index": index}},
            "status": {"phase": phase, "containerStatuses": [{"name": "trainer", "state": state}]}}


def test_success_takes_rank_zeros_summary():
    pods = [pod("Succeeded", 0, json.dumps({"kind": "train", "rank": 1}), index="1"),
            pod("Succeeded", 0, json.dumps({"kind": "train", "rank": 0}), index="0")]
    outcome = job_outcome(job([("Complete", "CompletionsReached")]), pods, "training")
    assert (outcome.state, outcome.summary["rank"]) == ("Succeeded", 0)


def test_a_permanent_exit_code_names_the_reason_and_the_trainers_error():
    message = json.dumps({"kind": "train", "error": "cutoff_len: must be at least 16", "reason": "BadConfig"})
    outcome = job_outcome(job([("Failed", "PodFailurePolicy")]), [pod("Failed", 64, message)], "training")
    assert (outcome.state, outcome.reason) == ("Failed", "BadConfig")
    assert outcome.message == "training failed: BadConfig (exit code 64): cutoff_len: must be at least 16"


def test_an_exhausted_backoff_says_how_often_it_tried_and_what_failed_last():
    pods = [pod("Failed", 1, json.dumps({"error": "first"}), finished="2026-01-01T00:00:01Z"),
            pod("Failed", 71, json.dumps({"error": "S3 unreachable"}), finished="2026-01-01T00:00:02Z")]
    outcome = job_outcome(job([("Failed", "BackoffLimitExceeded")], backoffLimit=1), pods, "training")
    assert outcome.reason == "StorageError"
    assert outcome.message.endswith("S3 unreachable; gave up after 2 failed pod(s) (backoffLimit 1)")
    assert outcome.restarts == 2


def test_a_log_tail_stands_in_for_a_missing_summary():
    outcome = job_outcome(job([("Failed", "BackoffLimitExceeded")]), [pod("Failed", 137, "Killed\nOOM")], "eval")
    assert outcome.reason == "ExitCode137"
    assert "Killed\nOOM" in outcome.message


def test_deadline():
    outcome = job_outcome(job([("Failed", "DeadlineExceeded")], activeDeadlineSeconds=600), [], "training")
    assert (outcome.reason, outcome.message) == ("DeadlineExceeded", "training ran longer than activeDeadlineSeconds (600s)")


def test_suspended_by_the_user_or_queued_for_kueue():
    assert job_outcome(job(suspend=True), [], "training").reason == "Suspended"
    queued = job_outcome(job(suspend=True, queue="gpu"), [], "training")
    assert (queued.state, queued.reason) == ("Suspended", "Queued") and "gpu" in queued.message


def test_running_counts_replaced_pods():
    outcome = job_outcome(job(active=1), [pod("Failed", 75), pod("Running")], "training")
    assert (outcome.state, outcome.restarts) == ("Running", 1)
    assert outcome.message == "training is running (pod replaced 1 time(s))"
    assert job_outcome(job(), [], "training").state == "Pending"


def test_pods_waiting_for_nodes_are_pending_not_running():
    waiting = job(active=2)
    waiting["status"]["ready"] = 0
    outcome = job_outcome(waiting, [], "training")
    assert outcome.state == "Pending" and "2 pod(s) wait to start" in outcome.message
    waiting["status"]["ready"] = 1
    assert job_outcome(waiting, [], "training").state == "Running"


def test_summaries_are_json_objects_only():
    assert parse_summary('{"kind": "train"}') == {"kind": "train"}
    assert parse_summary("[1, 2]") is None
    assert parse_summary("Traceback ...") is None
    assert parse_summary(None) is None


def test_an_evicted_pod_counts_as_replaced_while_it_terminates():
    # On a real cluster the evicted pod is deleted once it stops: it may never be listed as Failed.
    evicted = pod("Running")
    evicted["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    evicted["status"]["conditions"] = [{"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI"}]
    deleted = pod("Running")
    deleted["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    outcome = job_outcome(job(active=2), [evicted, pod("Pending"), deleted], "training")
    assert outcome.restarts == 1


def test_an_outcome_sets_phase_and_conditions_and_a_resumed_job_says_so():
    draft = StatusDraft({"phase": "Suspended", "conditions": []}, generation=2, now="t")
    apply_outcome(draft, JobOutcome("Suspended", "Queued", "training waits for admission by Kueue"))
    assert draft.phase == "Suspended" and draft.get_condition("Suspended")["reason"] == "Queued"
    apply_outcome(draft, JobOutcome("Running", "Running", "training is running"))
    assert draft.phase == "Running" and draft.get_condition("Suspended")["status"] == "False"
    apply_outcome(draft, JobOutcome("Failed", "OutOfMemory", "training failed: OutOfMemory"))
    assert draft.phase == "Failed" and draft.get_condition("Failed")["reason"] == "OutOfMemory"


def test_a_summary_part_that_does_not_fit_the_status_schema_is_left_out():
    assert conform(LengthStats, {"min": 1, "mean": 2.0, "p50": 2, "p95": 3, "max": 4}, "lengths") is not None
    assert conform(LengthStats, {"min": "one"}, "lengths") is None
    assert conform(LengthStats, None, "lengths") is None
