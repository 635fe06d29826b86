"""What the three kinds' handlers share: the reconcile loop, child creation, reading a Job's outcome,
waiting for other resources, and the periodic resync.

A reconcile is level-based: it reads the resource and its children from the API server, decides,
creates what is missing (a 409 means another reconcile got there first, and its object is used),
and patches the status with the difference. Nothing it needs lives only in memory, so after an
operator restart at any point the next reconcile finds the one Job that exists and carries on.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import kopf
from pydantic import BaseModel, ValidationError

from kubetune_operator import exitcodes
from kubetune_operator.api import EvalRun, FineTuneJob, Resource
from kubetune_operator.api.common import GROUP, VERSION
from kubetune_operator.builders import common as builders
from kubetune_operator.builders import plan
from kubetune_operator.runtime.context import ResourceKey, Runtime
from kubetune_operator.runtime.events import post_event
from kubetune_operator.runtime.kube import CUSTOM_RESOURCES, JOBS, PODS, resource_for
from kubetune_operator.runtime.status import TERMINAL_PHASES, StatusDraft, clip
from kubetune_operator.runtime.tokens import progress_token

log = logging.getLogger(__name__)

JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
# Children are created in this order: pods read the Secret and the ConfigMap, so the Job comes last.
CREATE_ORDER = {"Secret": 0, "ConfigMap": 1, "Service": 2, "Job": 3}

Reconciler = Callable[[Runtime, Any, dict[str, Any], StatusDraft], Awaitable[None]]


@dataclass(frozen=True)
class KindHandler:
    model: type[Resource]
    reconcile: Reconciler


HANDLERS: dict[str, KindHandler] = {}
PLURAL_OF_SINGULAR: dict[str, str] = {}


def register(model: type[Resource], reconcile: Reconciler) -> None:
    """Make `reconcile` the reconciler of `model`'s kind and watch that kind."""
    HANDLERS[model.plural] = KindHandler(model, reconcile)
    PLURAL_OF_SINGULAR[model.singular] = model.plural

    @kopf.on.event(GROUP, VERSION, model.plural, id=f"{model.singular}-event")
    async def changed(
        event: dict[str, Any], memo: kopf.Memo, finetunejob_inputs: kopf.Index, evalrun_inputs: kopf.Index, **_
    ) -> None:
        meta = event["object"]["metadata"]
        dependents = dependents_of(model.plural, meta["namespace"], meta["name"], finetunejob_inputs, evalrun_inputs)
        await handle_event(memo.runtime, model.plural, event, dependents)


# --- the reconcile loop ---------------------------------------------------------------------------


async def reconcile(rt: Runtime, plural: str, namespace: str, name: str) -> None:
    """Bring one resource's children and status up to date (serialised per resource)."""
    handler = HANDLERS[plural]
    async with rt.locks.hold((plural, namespace, name)):
        with rt.metrics.time_reconcile(handler.model.singular):
            body = await rt.api.get(CUSTOM_RESOURCES[plural], namespace, name)
            if body is None or body["metadata"].get("deletionTimestamp"):
                return
            draft = StatusDraft(body.get("status"), body["metadata"].get("generation"))
            resource = parse(handler.model, body, draft)
            if resource is not None:
                await handler.reconcile(rt, resource, body, draft)
            await publish(rt, handler.model, body, draft)


def parse(model: type[Resource], body: Mapping[str, Any], draft: StatusDraft) -> Resource | None:
    """The typed resource; a spec the model refuses fails the resource, naming every bad field.

    The API server validated it against the CRD already; this catches a CRD older than the operator.
    A resource that finished under an older API keeps its outcome.
    """
    try:
        return model.model_validate({k: v for k, v in body.items() if k != "status"})
    except ValidationError as exc:
        if not draft.was_terminal:
            problems = "; ".join(f"{_location(e['loc'])}: {e['msg']}" for e in exc.errors())
            fail(draft, "InvalidSpec", f"the spec does not match this operator's API: {problems}")
        return None


def _location(parts: Iterable[Any]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


async def publish(rt: Runtime, model: type[Resource], body: Mapping[str, Any], draft: StatusDraft) -> None:
    patch = draft.finish()
    if patch is None:
        return
    meta = body["metadata"]
    written = await rt.api.patch(
        CUSTOM_RESOURCES[model.plural], meta["namespace"], meta["name"], {"status": patch}, "status"
    )
    rt.own_writes.record((model.plural, meta["namespace"], meta["name"]), written)
    for transition in draft.transitions():
        await post_event(rt.api, body, transition.type, transition.reason, transition.message)
    if draft.phase in TERMINAL_PHASES and not draft.was_terminal:
        if draft.phase == "Failed":
            failed = draft.get_condition("Failed") or {}
            rt.metrics.failures.labels(model.singular, failed.get("reason", "Unknown")).inc()
        if model is FineTuneJob:
            rt.metrics.forget_training(meta["namespace"], meta["name"])
    if model is FineTuneJob and draft.phase == "Suspended":
        # A suspended (or Kueue-evicted) job makes no progress by design: its last progress time must
        # not raise the stall alert. Resumed, its first progress event brings the series back.
        rt.metrics.forget_training(meta["namespace"], meta["name"])


def fail(draft: StatusDraft, reason: str, message: str) -> None:
    draft.condition("Failed", True, reason, message)
    draft.set_phase("Failed", message)


def conform(model: type[BaseModel], data: Any, what: str) -> dict[str, Any] | None:
    """`data` as the status schema wants it, or None (logged) when it does not fit.

    Summaries come from pods; a field of the wrong shape must not make the status patch fail.
    """
    if data is None:
        return None
    try:
        return model.model_validate(data).model_dump(by_alias=True, exclude_none=True, mode="json")
    except ValidationError as exc:
        log.warning("%s left out of the status: %s", what, exc)
        return None


# --- children ---------------------------------------------------------------------------------------


def foreign_owner(child: Mapping[str, Any], resource: Resource) -> bool:
    """Whether `child` is controlled by another object than `resource`: a namesake's, deleted with
    it but not yet garbage-collected (`kubectl delete` returns before the children are gone)."""
    owners = (child.get("metadata") or {}).get("ownerReferences") or []
    return any(o.get("controller") and o.get("uid") != resource.metadata.uid for o in owners)


def _leftover(kind: str, name: str, resource: Resource) -> str:
    return (f"waiting for {kind} {name}, left by a deleted {resource.kind_name} of the same name, "
            "to be garbage-collected")


async def create_children(
    rt: Runtime, resource: Resource, manifests: list[dict[str, Any]], draft: StatusDraft
) -> dict[str, Any] | None:
    """Create the progress Secret and `manifests`; returns the Job (the existing one on a 409), or
    None (and Pending) while a child of the same name still belongs to a deleted namesake."""
    namespace = builders.namespace_of(resource)
    secret = builders.progress_secret(resource, progress_token(rt.settings.progress_key, resource.metadata.uid or ""))
    job = None
    for manifest in sorted([secret, *manifests], key=lambda m: CREATE_ORDER.get(m["kind"], len(CREATE_ORDER))):
        # An existing Secret cannot be read back (RBAC); the other children are, to check their owner.
        created, _ = await rt.api.create(resource_for(manifest), namespace, manifest,
                                         fetch_existing=manifest["kind"] != "Secret")
        if created is not None and foreign_owner(created, resource):
            draft.set_phase("Pending", _leftover(manifest["kind"], manifest["metadata"]["name"], resource))
            return None
        if manifest["kind"] == "Job":
            job = created
            rt.own_writes.record((JOBS.plural, namespace, manifest["metadata"]["name"]), created)
    if job is None:
        raise ValueError(f"the builders gave no Job for {resource.kind_name} {resource.metadata.name}")
    return job


async def job_pods(rt: Runtime, job: Mapping[str, Any]) -> list[dict[str, Any]]:
    if not job.get("status"):
        # The Job controller has not touched it yet: there are no pods to read.
        return []
    meta = job["metadata"]
    return await rt.api.list(PODS, meta["namespace"], {JOB_NAME_LABEL: meta["name"]})


async def sync_suspend(rt: Runtime, job: dict[str, Any], suspend: bool) -> dict[str, Any]:
    """spec.suspend → the Job's suspend. Under Kueue the operator only ever suspends: admission
    (unsuspending) is Kueue's. Whether Kueue manages the Job is its label, set at creation: a
    queueName added or removed later does not change who resumes it."""
    current = bool((job.get("spec") or {}).get("suspend"))
    queued = bool(((job.get("metadata") or {}).get("labels") or {}).get(KUEUE_QUEUE_LABEL))
    if current == suspend or (current and queued):
        return job
    meta = job["metadata"]
    patched = await rt.api.patch(JOBS, meta["namespace"], meta["name"], {"spec": {"suspend": suspend}})
    rt.own_writes.record((JOBS.plural, meta["namespace"], meta["name"]), patched)
    return patched


# --- a Job's outcome --------------------------------------------------------------------------------


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
        fail(draft, outcome.reason, outcome.message)
        return
    if outcome.state == "Succeeded":
        draft.condition("Succeeded", True, outcome.reason, outcome.message)
    draft.set_phase(outcome.state, outcome.message)


async def ensure_job(
    rt: Runtime,
    resource: Resource,
    draft: StatusDraft,
    job_name: str,
    children: Callable[[], Awaitable[list[dict[str, Any]] | None]],
    marker: str = "JobCreated",
) -> dict[str, Any] | None:
    """The resource's Job: the existing one, or one created from `children()` (None while that
    waits for inputs). The `marker` condition records the Job in the status, also when an operator
    created it and died before saying so: without the marker a deleted Job would be made again."""
    job = await rt.api.get(JOBS, builders.namespace_of(resource), job_name)
    if job is None:
        if draft.holds(marker):
            # Gone before the resource finished: fail rather than start over, since a second Job would
            # repeat work already paid for and its output would replace the first's.
            fail(draft, "JobDeleted", f"Job {job_name} was deleted before it finished; create the resource anew to rerun")
            return None
        manifests = await children()
        if manifests is None:
            return None
        job = await create_children(rt, resource, manifests, draft)
        if job is None:
            return None
    elif foreign_owner(job, resource):
        # Its outcome is the namesake's, not this resource's; its DELETED event brings the next reconcile.
        draft.set_phase("Pending", _leftover("Job", job_name, resource))
        return None
    if not draft.holds(marker):
        draft.condition(marker, True, "JobCreated", f"Job {job_name} created")
    return job


# --- inputs from other resources -------------------------------------------------------------------


@dataclass(frozen=True)
class Dependency:
    ready: bool
    reason: str
    message: str
    status: dict[str, Any]


async def dependency(rt: Runtime, plural: str, namespace: str, name: str, label: str) -> Dependency:
    """Whether another kubetune resource has succeeded, with a reason and message saying why not."""
    kind = HANDLERS[plural].model.kind_name
    body = await rt.api.get(CUSTOM_RESOURCES[plural], namespace, name)
    if body is None:
        return Dependency(False, f"{label}NotFound", f"waiting for {kind} {name}: it does not exist in {namespace}", {})
    status = body.get("status") or {}
    phase = status.get("phase") or "Pending"
    if phase == "Succeeded":
        return Dependency(True, f"{label}Ready", f"{kind} {name} has succeeded", status)
    if phase == "Failed":
        why = status.get("message") or "no message"
        return Dependency(False, f"{label}Failed", f"{kind} {name} failed ({why}); fix it or point to another", status)
    return Dependency(False, f"{label}NotReady", f"waiting for {kind} {name} to succeed (it is {phase})", status)


def wait(draft: StatusDraft, blocking: list[Dependency]) -> None:
    draft.set_phase("Waiting", "; ".join(d.message for d in blocking))


# --- kopf entry points ------------------------------------------------------------------------------


async def handle_event(
    rt: Runtime, plural: str, event: Mapping[str, Any], dependents: Iterable[tuple[str, str]]
) -> None:
    """A watch event of a kubetune resource: keep the phase book, reconcile, wake what waits on it."""
    body = event["object"]
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    key: ResourceKey = (plural, namespace, name)
    singular = HANDLERS[plural].model.singular
    if event.get("type") == "DELETED":
        rt.phases.forget(key)
        rt.own_writes.forget(key)
        rt.metrics.set_phase_counts(singular, rt.phases.counts(plural))
        rt.progress.forget(key)
        forget_series(rt, plural, namespace, name)
        return
    changed = rt.phases.observe(key, (body.get("status") or {}).get("phase"))
    if changed:
        rt.metrics.set_phase_counts(singular, rt.phases.counts(plural))
    if not rt.own_writes.is_echo(key, body):
        await reconcile(rt, plural, namespace, name)
    if changed:
        for dependent_plural, dependent in sorted(set(dependents)):
            await reconcile(rt, dependent_plural, namespace, dependent)


def forget_series(rt: Runtime, plural: str, namespace: str, name: str) -> None:
    """Drop a deleted resource's per-resource series. They are labelled by namespace and name only,
    so only its own kind's go: a FineTuneJob and an EvalRun may share the name of a dataset."""
    if plural == FineTuneJob.plural:
        rt.metrics.forget_training(namespace, name)
    elif plural == EvalRun.plural:
        for gauge in (rt.metrics.eval_metric, rt.metrics.eval_gates_failed):
            gauge.remove_by_labels({"namespace": namespace, "name": name})


def input_index(model: type[Resource], body: Mapping[str, Any]) -> dict[tuple[str, str, str], tuple[str, str]]:
    """For a kopf index: each resource this one waits for → this one, to wake it when they change."""
    try:
        resource = model.model_validate({k: v for k, v in body.items() if k != "status"})
    except ValidationError:
        return {}
    plurals = {handler.model.kind_name: plural for plural, handler in HANDLERS.items()}
    return {
        (plurals[kind], namespace, name): (model.plural, resource.metadata.name)
        for kind, namespace, name in plan.references(resource)
    }


def dependents_of(plural: str, namespace: str, name: str, *indexes: kopf.Index) -> list[tuple[str, str]]:
    """(plural, name) of the resources whose inputs include this one, from the input indexes."""
    found = []
    for index in indexes:
        for entry in index.get((plural, namespace, name), []):
            found.append(tuple(entry))
    return found


@kopf.on.event("batch", "v1", "jobs", labels={"app.kubernetes.io/managed-by": "kubetune"})
async def job_changed(event: dict[str, Any], body: kopf.Body, memo: kopf.Memo, **_) -> None:
    """Any change of a child Job, except the operator's own writes, is a reason to look at its
    resource again."""
    rt: Runtime = memo.runtime
    key = (JOBS.plural, body.metadata.namespace, body.metadata.name)
    if event.get("type") == "DELETED":
        rt.own_writes.forget(key)
    elif rt.own_writes.is_echo(key, body):
        return
    labels = body.metadata.labels
    plural = PLURAL_OF_SINGULAR.get(labels.get("kubetune.dev/kind", ""))
    name = labels.get("kubetune.dev/resource")
    if plural is not None and name:
        await reconcile(rt, plural, body.metadata.namespace, name)


@kopf.on.startup()
async def start_resync(memo: kopf.Memo, **_) -> None:
    memo.resync = asyncio.create_task(resync(memo))


@kopf.on.cleanup()
async def stop_resync(memo: kopf.Memo, **_) -> None:
    task = getattr(memo, "resync", None)
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def resync(memo: kopf.Memo) -> None:
    """Reconcile every unfinished resource now and then: a reconcile that failed (API error, a
    crash of an event handler) is retried here, since watch events are not replayed."""
    while True:
        rt: Runtime = memo.runtime
        await asyncio.sleep(rt.settings.resync_interval)
        for plural, namespace, name in list(rt.phases.unfinished()):
            try:
                await reconcile(rt, plural, namespace, name)
            except Exception:
                log.exception("resync of %s %s/%s failed; the next round retries", plural, namespace, name)
