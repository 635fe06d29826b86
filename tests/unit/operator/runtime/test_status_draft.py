"""Status drafts: conditions keep their transition time while they hold; unchanged means no patch."""

from __future__ import annotations

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
    status = draft.next | {"observedGeneration": 2}
    again = StatusDraft(status, generation=2, now="T2")
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
