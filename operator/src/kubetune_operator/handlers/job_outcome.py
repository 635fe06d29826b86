"""A Job's outcome, read from its conditions and its pods' termination messages, and what it sets in
the status. Pure: no API calls, so every case is unit-tested with plain dicts."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from kubetune_operator import exitcodes
from kubetune_operator.runtime.status import StatusDraft, clip

log = logging.getLogger(__name__)

COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"


@dataclass(frozen=True)
class JobOutcome:
    state: str  # Pending | Running | Suspended | Succeeded | Failed
    reason: str
    message: str
    summary: dict[str, Any] | None = None
    restarts: int = 0


def termination(pod: Mapping[str, Any]) -> tuple[int | None, str | None]:
    """Exit code and termination message of the pod's (first) terminated container."""
    for container in (pod.get("status") or {}).get("containerStatuses") or []:
        for state_key in ("state", "lastState"):
            terminated = (container.get(state_key) or {}).get("terminated")
            if terminated:
                return terminated.get("exitCode"), terminated.get("message")
    return None, None


def parse_summary(text: str | None) -> dict[str, Any] | None:
    """The JSON termination summary (contracts §5), or None for a log tail or nothing."""
    if not text:
        return None
    try:
        summary = json.loads(text)
    except ValueError:
        return None
    return summary if isinstance(summary, dict) else None


def _finished_at(pod: Mapping[str, Any]) -> str:
    for container in (pod.get("status") or {}).get("containerStatuses") or []:
        terminated = (container.get("state") or {}).get("terminated") or {}
        if terminated.get("finishedAt"):
            return terminated["finishedAt"]
    return ""


def _phase(pod: Mapping[str, Any]) -> str | None:
    return (pod.get("status") or {}).get("phase")


def _disrupted(pod: Mapping[str, Any]) -> bool:
    """Evicted or preempted and on its way out. Such a pod is deleted once it stops, so a real
    cluster may never list it as Failed: it counts as replaced from the moment it is marked."""
    return bool((pod.get("metadata") or {}).get("deletionTimestamp")) and any(
        c.get("type") == "DisruptionTarget" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or [])


def job_outcome(job: Mapping[str, Any], pods: list[dict[str, Any]], work: str) -> JobOutcome:
    """Where the Job stands, from its conditions and its pods' termination messages."""
    status = job.get("status") or {}
    spec = job.get("spec") or {}
    holding = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    failed = sorted((p for p in pods if _phase(p) == "Failed"), key=_finished_at)
    restarts = len(failed) + sum(1 for p in pods if _disrupted(p) and _phase(p) != "Failed")
    if "Complete" in holding or "SuccessCriteriaMet" in holding:
        return JobOutcome("Succeeded", "Completed", f"{work} finished", _success_summary(pods), restarts)
    condition = holding.get("Failed") or holding.get("FailureTarget")
    if condition is not None:
        return _failure(condition, failed, spec, work)
    if spec.get("suspend"):
        queue = ((job.get("metadata") or {}).get("labels") or {}).get(KUEUE_QUEUE_LABEL)
        return JobOutcome("Suspended", "Suspended", f"{work} is suspended", restarts=restarts) if not queue else \
            JobOutcome("Suspended", "Queued", f"{work} waits for admission by Kueue (queue {queue})", restarts=restarts)
    active = status.get("active") or 0
    # `active` counts pods still waiting for a node (GPUs may take hours to free up); `ready` those
    # that run. Clusters older than Job's `ready` field (1.24) only have `active`.
    running = active if status.get("ready") is None else status["ready"]
    retried = f" (pod replaced {restarts} time(s))" if restarts else ""
    if running:
        return JobOutcome("Running", "Running", f"{work} is running{retried}", restarts=restarts)
    if active:
        return JobOutcome("Pending", "PodsPending", f"{work}: {active} pod(s) wait to start{retried}", restarts=restarts)
    return JobOutcome("Pending", "JobCreated", f"{work}: Job {job['metadata']['name']} waits for its pods{retried}",
                      restarts=restarts)


def _success_summary(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    succeeded = [p for p in pods if _phase(p) == "Succeeded"]
    # Rank 0 of an Indexed Job writes the summary that counts.
    succeeded.sort(key=lambda p: ((p.get("metadata") or {}).get("annotations") or {}).get(COMPLETION_INDEX) != "0")
    for pod in succeeded:
        summary = parse_summary(termination(pod)[1])
        if summary is not None:
            return summary
    return None


def _failure(condition: Mapping[str, Any], failed: list[dict[str, Any]], spec: Mapping[str, Any], work: str) -> JobOutcome:
    job_reason = condition.get("reason") or ""
    if job_reason == "DeadlineExceeded":
        limit = spec.get("activeDeadlineSeconds")
        return JobOutcome(
            "Failed", "DeadlineExceeded", f"{work} ran longer than activeDeadlineSeconds ({limit}s)", restarts=len(failed)
        )
    code, text = termination(failed[-1]) if failed else (None, None)
    summary = parse_summary(text)
    reason = exitcodes.reason(code) if code is not None else str((summary or {}).get("reason") or job_reason or "Failed")
    detail = (summary or {}).get("error") or (text if summary is None and text else None) or condition.get("message") or ""
    message = f"{work} failed: {reason}" + (f" (exit code {code})" if code is not None else "") + (f": {detail}" if detail else "")
    if job_reason == "BackoffLimitExceeded":
        message += f"; gave up after {len(failed)} failed pod(s) (backoffLimit {spec.get('backoffLimit')})"
    return JobOutcome("Failed", reason, clip(message), summary, len(failed))


def apply_outcome(draft: StatusDraft, outcome: JobOutcome) -> None:
    """Phase and conditions for a Job's outcome; the caller adds what the summary says."""
    if outcome.state == "Suspended":
        draft.condition("Suspended", True, outcome.reason, outcome.message)
    elif draft.get_condition("Suspended") is not None:
        draft.condition("Suspended", False, "Resumed", "the Job is no longer suspended")
    if outcome.state == "Failed":
        draft.fail(outcome.reason, outcome.message)
        return
    if outcome.state == "Succeeded":
        draft.condition("Succeeded", True, outcome.reason, outcome.message)
    draft.set_phase(outcome.state, outcome.message)


def conform(model: type[BaseModel], data: Any, what: str, strict: bool = False) -> dict[str, Any] | None:
    """`data` as the status schema wants it, or None (logged) when it does not fit.

    Summaries come from pods; a field of the wrong shape must not make the status patch fail.
    """
    if data is None:
        return None
    try:
        return model.model_validate(data, strict=strict).model_dump(by_alias=True, exclude_none=True, mode="json")
    except ValidationError as exc:
        log.warning("%s left out of the status: %s", what, exc)
        return None


def status_fields(status: type[BaseModel], fields: Mapping[str, Any]) -> dict[str, Any]:
    """Those of `fields` (by their wire names) that fit the kind's status model, each checked on its
    own against its type and bounds, so that one misshapen part of a summary costs only itself. A
    value of the wrong JSON type is left out, never coerced (`true` is no loss, `"3"` no count)."""
    kept = {}
    for key, value in fields.items():
        checked = conform(status, {key: value}, key, strict=True)
        if checked is not None and key in checked:
            kept[key] = checked[key]
    return kept
