"""Status of a kubetune resource: phases, conditions, and the merge patch from one status to the next.

Every reconcile starts a `StatusDraft` from the status it just read, changes what it observed, and
sends only the difference. A condition keeps its lastTransitionTime while its status holds, so an
unchanged world produces an empty patch and no write.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})
PHASES = ("Pending", "Waiting", "Suspended", "Running", "Succeeded", "Failed")
MAX_MESSAGE = 4096
# kstatus's conditions (sigs.k8s.io/cli-utils/pkg/kstatus), derived from the phase at every write:
# Ready (the work is done), Reconciling (it is under way), Stalled (it cannot go on without a change
# by the user). Flux's health checks, `kubectl wait --for=condition=Ready` and Argo CD read them.
KSTATUS_CONDITIONS = ("Ready", "Reconciling", "Stalled")
# Conditions whose changes come with a phase change, whose Event says the same.
PHASE_CONDITIONS = frozenset({"JobCreated", "PromoteJobCreated", "Suspended", "Succeeded", "Failed",
                              *KSTATUS_CONDITIONS})


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def clip(message: str, limit: int = MAX_MESSAGE) -> str:
    """Status strings have a length bound in the CRD; the start of a message says the most."""
    return message if len(message) <= limit else message[: limit - 1] + "…"


@dataclass(frozen=True)
class Transition:
    """Something that changed between the read status and the draft: worth an Event."""

    type: str  # Normal | Warning
    reason: str
    message: str


class StatusDraft:
    """The next status of one resource, built from the current one."""

    def __init__(self, current: Mapping[str, Any] | None, generation: int | None, now: str | None = None):
        self.current: dict[str, Any] = copy.deepcopy(dict(current or {}))
        self.next: dict[str, Any] = copy.deepcopy(self.current)
        self.generation = generation
        self.now = now or now_rfc3339()
        # (reason, message) when the resource waits for something that cannot happen on its own.
        self.stalled: tuple[str, str] | None = None

    @property
    def phase(self) -> str | None:
        return self.next.get("phase")

    @property
    def previous_phase(self) -> str | None:
        return self.current.get("phase")

    @property
    def was_terminal(self) -> bool:
        return self.current.get("phase") in TERMINAL_PHASES

    def set_phase(self, phase: str, message: str) -> None:
        self.next["phase"] = phase
        self.next["message"] = clip(message)
        if phase == "Running" and not self.next.get("startTime"):
            self.next["startTime"] = self.now
        if phase in TERMINAL_PHASES and not self.next.get("completionTime"):
            self.next["completionTime"] = self.now

    def fail(self, reason: str, message: str) -> None:
        self.condition("Failed", True, reason, message)
        self.set_phase("Failed", message)

    def stall(self, reason: str, message: str) -> None:
        """Not failed, but stuck until the user changes something (an input that failed)."""
        self.stalled = (reason, message)

    def _kstatus(self) -> None:
        """Ready, Reconciling and Stalled for the phase as it now is."""
        phase = self.next.get("phase")
        if phase is None:
            return
        message = self.next.get("message") or phase
        failed = self.get_condition("Failed") or {}
        suspended = self.get_condition("Suspended") or {}
        if phase == "Succeeded":
            ready, reconciling, stalled = (True, "Succeeded"), (False, "Succeeded"), (False, "Succeeded")
        elif phase == "Failed":
            reason = failed.get("reason") or "Failed"
            ready, reconciling, stalled = (False, reason), (False, "Failed"), (True, reason)
        elif self.stalled is not None:
            reason = self.stalled[0]
            message = self.stalled[1]
            ready, reconciling, stalled = (False, reason), (False, reason), (True, reason)
        elif phase == "Suspended" and suspended.get("reason") != "Queued":
            # Suspended as asked: nothing is under way and nothing is wrong.
            ready, reconciling, stalled = (False, "Suspended"), (False, "Suspended"), (False, "Suspended")
        else:
            reason = suspended.get("reason") if phase == "Suspended" else phase
            ready, reconciling, stalled = (False, reason), (True, reason), (False, reason)
        for type, (status, reason) in zip(KSTATUS_CONDITIONS, (ready, reconciling, stalled), strict=True):
            self.condition(type, status, reason, message)

    def set(self, **fields: Any) -> None:
        """Set top-level status fields (camelCase); None removes one."""
        self.next.update(fields)

    def condition(self, type: str, status: bool | None, reason: str, message: str) -> None:
        wanted = "True" if status is True else "False" if status is False else "Unknown"
        conditions = [dict(c) for c in self.next.get("conditions") or []]
        entry = {
            "type": type,
            "status": wanted,
            "reason": reason,
            "message": clip(message),
            "observedGeneration": self.generation,
        }
        for index, existing in enumerate(conditions):
            if existing.get("type") == type:
                same = existing.get("status") == wanted
                entry["lastTransitionTime"] = existing.get("lastTransitionTime") if same else self.now
                conditions[index] = _without_none(entry)
                break
        else:
            entry["lastTransitionTime"] = self.now
            conditions.append(_without_none(entry))
        self.next["conditions"] = conditions

    def get_condition(self, type: str) -> dict[str, Any] | None:
        for condition in self.next.get("conditions") or []:
            if condition.get("type") == type:
                return condition
        return None

    def holds(self, type: str) -> bool:
        condition = self.get_condition(type)
        return condition is not None and condition.get("status") == "True"

    def finish(self) -> dict[str, Any] | None:
        """The merge patch for `status`, or None when nothing changed."""
        self.next["observedGeneration"] = self.generation
        self._kstatus()
        diff = merge_patch(self.current, self.next)
        return diff or None

    def transitions(self) -> list[Transition]:
        """Phase changes, and changes (status or reason) of the conditions a phase does not already
        tell, for Events."""
        found = []
        if self.next.get("phase") != self.current.get("phase"):
            phase = self.next.get("phase") or "Pending"
            if phase == "Failed":
                reason = (self.get_condition("Failed") or {}).get("reason") or phase
                found.append(Transition("Warning", reason, self.next.get("message", "")))
            else:
                found.append(Transition("Normal", phase, self.next.get("message", "")))
        before = {c.get("type"): c for c in self.current.get("conditions") or []}
        for condition in self.next.get("conditions") or []:
            if condition.get("type") in PHASE_CONDITIONS:
                continue
            old = before.get(condition.get("type"))
            if old is None or (old.get("status"), old.get("reason")) != (condition.get("status"), condition.get("reason")):
                found.append(
                    Transition(
                        "Normal",
                        condition.get("reason") or condition.get("type"),
                        f"{condition.get('type')}={condition.get('status')}: {condition.get('message', '')}",
                    )
                )
        return found


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7386 merge patch that turns `old` into `new` (lists and scalars are replaced whole)."""
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        before = old.get(key)
        if key in old and before == value:
            continue
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            patch[key] = merge_patch(before, value)
        else:
            patch[key] = copy.deepcopy(value)
    return patch


def _without_none(mapping: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if v is not None}
