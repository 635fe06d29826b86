"""A local Job controller and kubelet: runs every Job of a namespace as local processes.

It watches Jobs over the API like the real controllers, creates their Pods, runs each pod's
container with `localrun.pod` and writes Pod and Job status back: Running, termination messages
and exit codes, `active`/`succeeded`/`failed`, Complete and Failed conditions, Indexed
completions, podFailurePolicy (Ignore, FailJob, Count), backoffLimit, suspend (pods are deleted;
resuming creates new ones) and activeDeadlineSeconds. GPU requests are ignored; pod.py says how
torchrun is collapsed. `evict` is a disruption (DisruptionTarget, then SIGTERM), `crash` a SIGKILL.

It serves tests and machines without a cluster; it is not a scheduler: every pod starts at once.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets as random_names
import signal
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from kubetune_operator.localrun import pod as local_pod
from kubetune_operator.runtime.kube import CONFIG_MAPS, JOBS, PODS, SECRETS, ApiError, KubeApi

log = logging.getLogger(__name__)

JOB_NAME = "batch.kubernetes.io/job-name"
CONTROLLER_UID = "batch.kubernetes.io/controller-uid"
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
# How long an evicted or stopped container may run after SIGTERM before SIGKILL.
STOP_GRACE_SECONDS = 30.0
CONFIG_RETRY_SECONDS = 1.0
TERMINAL_POD_PHASES = ("Succeeded", "Failed")

CommandMap = Callable[[list[str]], list[str]]


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(type: str, status: str, reason: str = "", message: str = "") -> dict[str, str]:
    entry = {"type": type, "status": status, "lastTransitionTime": _now(), "lastProbeTime": _now()}
    if reason:
        entry["reason"] = reason
    if message:
        entry["message"] = message
    return entry


def _holds(conditions: list[dict[str, Any]] | None, type: str) -> bool:
    return any(c.get("type") == type and c.get("status") == "True" for c in conditions or [])


def _pod_phase(pod: Mapping[str, Any]) -> str:
    return (pod.get("status") or {}).get("phase") or "Pending"


def _index(pod: Mapping[str, Any]) -> int | None:
    value = ((pod.get("metadata") or {}).get("annotations") or {}).get(COMPLETION_INDEX)
    return int(value) if value is not None else None


def policy_action(policy: Mapping[str, Any] | None, pod: Mapping[str, Any]) -> str:
    """The podFailurePolicy action for a failed pod: the first matching rule's, else Count."""
    status = pod.get("status") or {}
    for rule in (policy or {}).get("rules") or []:
        on_conditions = rule.get("onPodConditions")
        if on_conditions and any(
            c.get("type") == want.get("type") and c.get("status") == want.get("status", "True")
            for want in on_conditions
            for c in status.get("conditions") or []
        ):
            return rule["action"]
        on_codes = rule.get("onExitCodes")
        if on_codes:
            for container in status.get("containerStatuses") or []:
                if on_codes.get("containerName") not in (None, container.get("name")):
                    continue
                code = ((container.get("state") or {}).get("terminated") or {}).get("exitCode")
                if code in (None, 0):
                    continue
                inside = code in on_codes.get("values", [])
                if inside == (on_codes.get("operator", "In") == "In"):
                    return rule["action"]
    return "Count"


def completed_indexes(indexes: set[int]) -> str:
    """Kubernetes' compressed form: 0-2,5."""
    ranges, ordered = [], sorted(indexes)
    start = previous = None
    for index in ordered:
        if start is None:
            start = previous = index
        elif index == previous + 1:
            previous = index
        else:
            ranges.append((start, previous))
            start = previous = index
    if start is not None:
        ranges.append((start, previous))
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)


@dataclass
class _Running:
    job: str
    container: local_pod.LocalContainer
    disrupted: bool = False
    waiter: asyncio.Task | None = None


class LocalKubelet:
    """Runs the Jobs of `namespace` as local processes under `workdir`.

    `extra_env` goes into every container (e.g. AWS_* for a local S3); `command_map` turns a
    container's argv into a command of this machine, run as given (tests swap trainer commands for
    small scripts).
    """

    def __init__(
        self,
        api: KubeApi,
        namespace: str,
        workdir: Path,
        *,
        extra_env: Mapping[str, str] | None = None,
        command_map: CommandMap | None = None,
        gpus: int | None = None,
    ):
        self.api = api
        self.namespace = namespace
        self.workdir = Path(workdir)
        self.extra_env = dict(extra_env or {})
        self.command_map = command_map
        self.gpus = gpus
        self._running: dict[str, _Running] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._dirty: set[str] = set()
        self._tasks: set[asyncio.Task] = set()
        self._watcher: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=64, thread_name_prefix="local-pod")

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        self._watcher = asyncio.create_task(self._watch())

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        for name in list(self._running):
            await self._stop_container(name, delete=False)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _watch(self) -> None:
        while True:
            try:
                async for event in self.api.watch(JOBS, self.namespace):
                    job = event.get("object") or {}
                    name = (job.get("metadata") or {}).get("name")
                    if not name:
                        continue
                    if event.get("type") == "DELETED":
                        for pod_name in [p for p, r in self._running.items() if r.job == name]:
                            await self._stop_container(pod_name, delete=False)
                    else:
                        self.schedule(name)
            except (aiohttp.ClientError, ApiError, TimeoutError) as exc:
                log.warning("job watch interrupted (%s); watching again", exc)
                await asyncio.sleep(CONFIG_RETRY_SECONDS)

    def schedule(self, job_name: str, delay: float = 0.0) -> None:
        """Sync one Job soon; requests that arrive while it syncs fold into one more pass."""
        async def run() -> None:
            if delay:
                await asyncio.sleep(delay)
            self._dirty.add(job_name)
            lock = self._locks.setdefault(job_name, asyncio.Lock())
            if lock.locked():
                return
            async with lock:
                while job_name in self._dirty:
                    self._dirty.discard(job_name)
                    try:
                        await self._sync(job_name)
                    except (aiohttp.ClientError, ApiError, TimeoutError):
                        log.exception("sync of Job %s failed; retrying", job_name)
                        self.schedule(job_name, CONFIG_RETRY_SECONDS)
                    except Exception:
                        # A bug here must show, not vanish with the task.
                        log.exception("sync of Job %s failed", job_name)
                        raise

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- disruptions, for tests ------------------------------------------------------------------

    async def evict(self, pod_name: str) -> None:
        """A disruption (preemption, node drain): DisruptionTarget on the pod, then SIGTERM."""
        running = self._running[pod_name]
        running.disrupted = True
        await self.api.patch(
            PODS, self.namespace, pod_name,
            {"status": {"conditions": [_condition("DisruptionTarget", "True", "PreemptionByScheduler",
                                                  "evicted by the local kubelet")]}},
            "status",
        )
        running.container.signal(signal.SIGTERM)

    def crash(self, pod_name: str) -> None:
        """The container dies (SIGKILL) without a disruption: it counts against backoffLimit."""
        self._running[pod_name].container.signal(signal.SIGKILL)

    def running_pods(self, job_name: str | None = None) -> list[str]:
        return [name for name, r in self._running.items() if job_name in (None, r.job)]

    # --- the Job controller ----------------------------------------------------------------------

    async def _sync(self, name: str) -> None:
        job = await self.api.get(JOBS, self.namespace, name)
        if job is None:
            return
        spec, status = job.get("spec") or {}, dict(job.get("status") or {})
        conditions = [dict(c) for c in status.get("conditions") or []]
        pods = await self.api.list(PODS, self.namespace, {JOB_NAME: name})
        active = [p for p in pods if _pod_phase(p) not in TERMINAL_POD_PHASES]
        if _holds(conditions, "Complete") or _holds(conditions, "Failed"):
            for pod in active:
                await self._stop_container(pod["metadata"]["name"], delete=True)
            return
        if spec.get("suspend"):
            for pod in active:
                await self._stop_container(pod["metadata"]["name"], delete=True)
            if not _holds(conditions, "Suspended"):
                conditions = [c for c in conditions if c.get("type") != "Suspended"]
                conditions.append(_condition("Suspended", "True", "JobSuspended", "Job suspended"))
            await self._write_status(job, status | {"conditions": conditions, "active": 0, "ready": 0})
            return
        if _holds(conditions, "Suspended"):
            conditions = [c for c in conditions if c.get("type") != "Suspended"]
            conditions.append(_condition("Suspended", "False", "JobResumed", "Job resumed"))
        status.setdefault("startTime", _now())
        failure = self._failure(job, pods, status)
        if failure is not None:
            for pod in active:
                await self._stop_container(pod["metadata"]["name"], delete=True)
            reason, message = failure
            conditions += [_condition("FailureTarget", "True", reason, message), _condition("Failed", "True", reason, message)]
            await self._write_status(job, status | {"conditions": conditions, "active": 0, "ready": 0})
            return
        indexed = spec.get("completionMode") == "Indexed"
        completions = spec.get("completions") or 1
        succeeded = [p for p in pods if _pod_phase(p) == "Succeeded"]
        done_indexes = {_index(p) for p in succeeded} if indexed else set()
        done = len(done_indexes) >= completions if indexed else len(succeeded) >= completions
        counts = {
            "succeeded": len(done_indexes) if indexed else len(succeeded),
            "failed": sum(1 for p in pods if _pod_phase(p) == "Failed" and policy_action(spec.get("podFailurePolicy"), p) == "Count"),
        }
        if indexed and done_indexes:
            counts["completedIndexes"] = completed_indexes({i for i in done_indexes if i is not None})
        if done:
            for pod in active:
                await self._stop_container(pod["metadata"]["name"], delete=True)
            conditions += [
                _condition("SuccessCriteriaMet", "True", "CompletionsReached", "reached expected number of succeeded pods"),
                _condition("Complete", "True", "CompletionsReached", "reached expected number of succeeded pods"),
            ]
            await self._write_status(job, status | counts | {"conditions": conditions, "active": 0, "ready": 0,
                                                              "completionTime": _now()})
            return
        for pod in active:
            if pod["metadata"]["name"] not in self._running:
                # Created but never started (its ConfigMap or Secret was missing): try again.
                await self._start(pod)
        for index in self._missing(spec, indexed, completions, done_indexes, succeeded, active):
            active.append(await self._create_pod(job, index))
        ready = sum(1 for p in active if p["metadata"]["name"] in self._running)
        await self._write_status(job, status | counts | {"conditions": conditions, "active": len(active), "ready": ready})
        deadline = spec.get("activeDeadlineSeconds")
        if deadline:
            self.schedule(name, max(0.0, deadline - _elapsed(status["startTime"])) + 0.01)

    def _failure(self, job: Mapping[str, Any], pods: list[dict[str, Any]], status: Mapping[str, Any]) -> tuple[str, str] | None:
        spec = job.get("spec") or {}
        deadline = spec.get("activeDeadlineSeconds")
        if deadline and _elapsed(status["startTime"]) >= deadline:
            return "DeadlineExceeded", "Job was active longer than specified deadline"
        counted = 0
        for pod in pods:
            if _pod_phase(pod) != "Failed":
                continue
            action = policy_action(spec.get("podFailurePolicy"), pod)
            if action == "FailJob":
                code = next(
                    (((c.get("state") or {}).get("terminated") or {}).get("exitCode")
                     for c in (pod.get("status") or {}).get("containerStatuses") or []), None,
                )
                return "PodFailurePolicy", (
                    f"Container of pod {self.namespace}/{pod['metadata']['name']} failed with exit code {code} "
                    "matching FailJob rule"
                )
            if action == "Count":
                counted += 1
        if counted > spec.get("backoffLimit", 6):
            return "BackoffLimitExceeded", "Job has reached the specified backoff limit"
        return None

    @staticmethod
    def _missing(spec, indexed, completions, done_indexes, succeeded, active) -> list[int | None]:
        parallelism = spec.get("parallelism", 1)
        if indexed:
            busy = {_index(p) for p in active}
            free = [i for i in range(completions) if i not in done_indexes and i not in busy]
            return free[: max(0, parallelism - len(active))]
        wanted = min(parallelism, completions - len(succeeded)) - len(active)
        return [None] * max(0, wanted)

    async def _write_status(self, job: Mapping[str, Any], status: dict[str, Any]) -> None:
        if status != (job.get("status") or {}):
            await self.api.patch(JOBS, self.namespace, job["metadata"]["name"], {"status": status}, "status")

    # --- pods --------------------------------------------------------------------------------------

    async def _create_pod(self, job: Mapping[str, Any], index: int | None) -> dict[str, Any]:
        meta, template = job["metadata"], job["spec"]["template"]
        suffix = random_names.token_hex(3)[:5]
        name = f"{meta['name']}-{index}-{suffix}" if index is not None else f"{meta['name']}-{suffix}"
        labels = dict((template.get("metadata") or {}).get("labels") or {})
        labels |= {JOB_NAME: meta["name"], "job-name": meta["name"], CONTROLLER_UID: meta["uid"], "controller-uid": meta["uid"]}
        annotations = dict((template.get("metadata") or {}).get("annotations") or {})
        spec = dict(template["spec"])
        if index is not None:
            labels[COMPLETION_INDEX] = str(index)
            annotations[COMPLETION_INDEX] = str(index)
            index_env = {"name": "JOB_COMPLETION_INDEX",
                         "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{COMPLETION_INDEX}']"}}}
            spec["containers"] = [{**c, "env": [index_env, *(c.get("env") or [])]} for c in spec["containers"]]
            spec["hostname"] = f"{meta['name']}-{index}"
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "labels": labels,
                "annotations": annotations,
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"], "uid": meta["uid"],
                                     "controller": True, "blockOwnerDeletion": True}],
            },
            "spec": spec | {"nodeName": "localhost"},
        }
        created, _ = await self.api.create(PODS, self.namespace, pod)
        await self._start(created)
        return created

    async def _start(self, pod: Mapping[str, Any]) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        container = spec["containers"][0]
        host_argv = None
        if self.command_map is not None:
            host_argv = self.command_map([*(container.get("command") or []), *(container.get("args") or [])])
        try:
            prepared = local_pod.prepare(
                spec,
                workdir=self.workdir / self.namespace / meta["name"],
                config_maps=await self._sources(CONFIG_MAPS, spec, "configMap", "name", "configMapKeyRef"),
                secrets=await self._sources(SECRETS, spec, "secret", "secretName", "secretKeyRef"),
                fields=_fields(pod),
                extra_env=self.extra_env,
                gpus=self.gpus,
                host_argv=host_argv,
            )
        except local_pod.PodSpecError as exc:
            await self._patch_pod(meta["name"], {
                "phase": "Pending",
                "containerStatuses": [{"name": container["name"], "ready": False, "restartCount": 0,
                                       "state": {"waiting": {"reason": "CreateContainerConfigError", "message": str(exc)}}}],
            })
            self.schedule(meta["labels"][JOB_NAME], CONFIG_RETRY_SECONDS)
            return
        started = _now()
        running = _Running(job=meta["labels"][JOB_NAME], container=local_pod.LocalContainer(prepared))
        self._running[meta["name"]] = running
        await self._patch_pod(meta["name"], {
            "phase": "Running",
            "startTime": started,
            "podIP": "127.0.0.1",
            "hostIP": "127.0.0.1",
            "conditions": [_condition("Ready", "True")],
            "containerStatuses": [{"name": container["name"], "ready": True, "restartCount": 0,
                                   "image": container.get("image", ""), "state": {"running": {"startedAt": started}}}],
        })
        running.waiter = asyncio.create_task(self._wait(meta["name"], container["name"], started))

    async def _sources(self, resource, spec, volume_key, name_key, env_key) -> dict[str, dict[str, str]]:
        """The ConfigMaps or Secrets the pod names, as {name: {key: text}} (a missing one is left out)."""
        names = {v[volume_key][name_key] for v in spec.get("volumes") or [] if volume_key in v}
        for container in spec["containers"]:
            for entry in container.get("env") or []:
                ref = (entry.get("valueFrom") or {}).get(env_key)
                if ref:
                    names.add(ref["name"])
        found = {}
        for name in names:
            obj = await self.api.get(resource, self.namespace, name)
            if obj is not None:
                found[name] = _decoded(obj) if resource is SECRETS else dict(obj.get("data") or {})
        return found

    async def _wait(self, pod_name: str, container_name: str, started: str) -> None:
        running = self._running[pod_name]
        result = await asyncio.get_running_loop().run_in_executor(self._executor, running.container.wait)
        conditions = [_condition("Ready", "False", "PodCompleted")]
        if running.disrupted:
            conditions.append(_condition("DisruptionTarget", "True", "PreemptionByScheduler", "evicted by the local kubelet"))
        terminated = {
            "exitCode": result.exit_code,
            "reason": "Completed" if result.exit_code == 0 else "Error",
            "startedAt": started,
            "finishedAt": _now(),
        }
        if result.termination_message:
            terminated["message"] = result.termination_message
        try:
            await self._patch_pod(pod_name, {
                "phase": "Succeeded" if result.exit_code == 0 else "Failed",
                "conditions": conditions,
                "containerStatuses": [{"name": container_name, "ready": False, "restartCount": 0,
                                       "state": {"terminated": terminated}}],
            })
        except ApiError as exc:
            if exc.status != 404:
                raise
        finally:
            # Only now: until its final status is written, the pod must not look startable.
            if self._running.get(pod_name) is running:
                del self._running[pod_name]
        self.schedule(running.job)

    async def _patch_pod(self, name: str, status: dict[str, Any]) -> None:
        await self.api.patch(PODS, self.namespace, name, {"status": status}, "status")

    async def _stop_container(self, pod_name: str, delete: bool) -> None:
        """Stop a pod's process (SIGTERM, then SIGKILL after the grace period) and maybe delete the Pod."""
        running = self._running.pop(pod_name, None)
        if running is not None:
            running.container.signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(running.waiter), STOP_GRACE_SECONDS)
            except TimeoutError:
                running.container.signal(signal.SIGKILL)
            except (ApiError, aiohttp.ClientError):
                log.info("pod %s stopped; its final status was not written", pod_name)
        if delete:
            await self.api.delete(PODS, self.namespace, pod_name)


def _fields(pod: Mapping[str, Any]) -> dict[str, str]:
    meta, spec = pod["metadata"], pod["spec"]
    fields = {
        "metadata.name": meta["name"],
        "metadata.namespace": meta["namespace"],
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", "localhost"),
        "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
        "status.podIP": "127.0.0.1",
        "status.hostIP": "127.0.0.1",
    }
    for key, value in (meta.get("labels") or {}).items():
        fields[f"metadata.labels['{key}']"] = value
    for key, value in (meta.get("annotations") or {}).items():
        fields[f"metadata.annotations['{key}']"] = value
    return fields


def _decoded(secret: Mapping[str, Any]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode("utf-8") for k, v in (secret.get("data") or {}).items()}


def _elapsed(since: str) -> float:
    return (datetime.now(UTC) - datetime.strptime(since, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)).total_seconds()
