"""Status drafts: conditions keep their transition time while they hold; unchanged means no patch."""

from __future__ import annotations

import pytest

from kubetune_operator.runtime.status import StatusDraft, clip


def test_a_condition_keeps_its_transition_time_until_its_status_changes():
    first = StatusDraft({}, generation=1, now="T1")
    first.condition("DatasetReady", False, "DatasetNotFound", "waiting")
    first.set_phase("Waiting", "waiting")
    status = first.next | {"observedGeneration": 1}

    same = StatusDraft(status, generation=1, now="T2")
    same.condition("DatasetReady", False, "DatasetNotReady", "still waiting")
    assert same.get_condition("DatasetReady")["lastTransitionTime"] == "T1"

    flipped = StatusDraft(status, generation=1, now="T3")
    flipped.condition("DatasetReady", True, "DatasetReady", "ready")
    assert flipped.get_condition("DatasetReady")["lastTransitionTime"] == "T3"


def test_nothing_changed_gives_no_patch_and_no_transition():
    draft = StatusDraft({}, generation=2, now="T1")
    draft.set_phase("Running", "training is running")
    draft.finish()
    again = StatusDraft(draft.next, generation=2, now="T2")
    again.set_phase("Running", "training is running")
    assert again.finish() is None and again.transitions() == []


def test_phase_times_and_transitions():
    draft = StatusDraft({"phase": "Running", "startTime": "T0"}, generation=1, now="T9")
    draft.condition("Failed", True, "BadConfig", "training failed: BadConfig")
    draft.set_phase("Failed", "training failed: BadConfig")
    patch = draft.finish()
    assert patch["completionTime"] == "T9" and "startTime" not in patch
    assert [(t.type, t.reason) for t in draft.transitions()] == [("Warning", "BadConfig")]


def test_messages_are_clipped_to_the_schema_bound():
    assert len(clip("x" * 5000)) == 4096


def kstatus(draft: StatusDraft) -> dict[str, tuple[str, str]]:
    draft.finish()
    return {c["type"]: (c["status"], c["reason"]) for c in draft.next["conditions"]
            if c["type"] in ("Ready", "Reconciling", "Stalled")}


@pytest.mark.parametrize("phase, conditions, stalled, expected", [
    ("Pending", [], None, {"Ready": ("False", "Pending"), "Reconciling": ("True", "Pending"), "Stalled": ("False", "Pending")}),
    ("Running", [], None, {"Ready": ("False", "Running"), "Reconciling": ("True", "Running"), "Stalled": ("False", "Running")}),
    ("Waiting", [("DatasetReady", False, "DatasetNotReady")], None,
     {"Ready": ("False", "Waiting"), "Reconciling": ("True", "Waiting"), "Stalled": ("False", "Waiting")}),
    # An input that failed needs the user: kstatus calls that Failed, and no wait ends by itself.
    ("Waiting", [("DatasetReady", False, "DatasetFailed")], "DatasetFailed",
     {"Ready": ("False", "DatasetFailed"), "Reconciling": ("False", "DatasetFailed"), "Stalled": ("True", "DatasetFailed")}),
    ("Suspended", [("Suspended", True, "Suspended")], None,
     {"Ready": ("False", "Suspended"), "Reconciling": ("False", "Suspended"), "Stalled": ("False", "Suspended")}),
    ("Suspended", [("Suspended", True, "Queued")], None,
     {"Ready": ("False", "Queued"), "Reconciling": ("True", "Queued"), "Stalled": ("False", "Queued")}),
    ("Succeeded", [("Succeeded", True, "Completed")], None,
     {"Ready": ("True", "Succeeded"), "Reconciling": ("False", "Succeeded"), "Stalled": ("False", "Succeeded")}),
    ("Failed", [("Failed", True, "OutOfMemory")], None,
     {"Ready": ("False", "OutOfMemory"), "Reconciling": ("False", "Failed"), "Stalled": ("True", "OutOfMemory")}),
])
def test_kstatus_conditions_follow_the_phase(phase, conditions, stalled, expected):
    draft = StatusDraft({}, generation=3, now="T1")
    for type, status, reason in conditions:
        draft.condition(type, status, reason, "why")
    if stalled:
        draft.stall(stalled, "an input failed")
    draft.set_phase(phase, "what happens")
    assert kstatus(draft) == expected
    assert all(c["observedGeneration"] == 3 for c in draft.next["conditions"])


def test_kstatus_conditions_change_without_events_of_their_own():
    draft = StatusDraft({}, generation=1, now="T1")
    draft.set_phase("Running", "training is running")
    draft.finish()
    done = StatusDraft(draft.next, generation=1, now="T2")
    done.condition("Succeeded", True, "Completed", "training finished")
    done.set_phase("Succeeded", "training finished")
    assert kstatus(done)["Ready"] == ("True", "Succeeded")
    # The phase's Event says it; Ready, Reconciling and Stalled add none.
    assert [t.reason for t in done.transitions()] == ["Succeeded"]
    ready = next(c for c in done.next["conditions"] if c["type"] == "Ready")
    assert ready["lastTransitionTime"] == "T2"
