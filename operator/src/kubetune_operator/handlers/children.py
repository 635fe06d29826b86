"""A resource's children: created in order (409 is success), checked to be its own, and its Job's
pods and suspension.

Children have deterministic names, so a reconcile after an operator restart finds the ones an
earlier reconcile created instead of making them again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from kubetune_operator.api import Resource
from kubetune_operator.builders import workload
from kubetune_operator.handlers.job_outcome import KUEUE_QUEUE_LABEL
from kubetune_operator.runtime.context import Runtime
from kubetune_operator.runtime.kube import JOBS, PODS, resource_for
from kubetune_operator.runtime.status import StatusDraft
from kubetune_operator.runtime.tokens import progress_token

JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
# Children are created in this order: pods read the Secret and the ConfigMap, so the Job comes last.
CREATE_ORDER = {"Secret": 0, "ConfigMap": 1, "Service": 2, "Job": 3}


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
    namespace = workload.namespace_of(resource)
    secret = workload.progress_secret(resource, progress_token(rt.settings.progress_key, resource.metadata.uid or ""))
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
    job = await rt.api.get(JOBS, workload.namespace_of(resource), job_name)
    if job is None:
        if draft.holds(marker):
            # Gone before the resource finished: fail rather than start over, since a second Job would
            # repeat work already paid for and its output would replace the first's.
            draft.fail("JobDeleted", f"Job {job_name} was deleted before it finished; create the resource anew to rerun")
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
