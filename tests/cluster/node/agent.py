"""The node agent: fake GPU nodes whose pods run as local processes.

It registers Nodes (a CPU node for the system and the operator, and GPU nodes tainted as a GPU
pool is), renews their Leases, and plays the kubelet for every pod the scheduler binds to them:
volumes, env and the ServiceAccount token are resolved (`pods`), the container is started by a
`Runtime` (`runtime`), and the pod's status is written back as a kubelet writes it (phase,
conditions, containerStatuses with exit code and termination message, restarts under
restartPolicy Always/OnFailure). A pod being deleted (and so an evicted one: the Eviction API
sets DisruptionTarget and deletes) gets SIGTERM, then SIGKILL after its grace period; its final
status is written and the deletion confirmed, as a kubelet does.

It grew out of the local Job controller and kubelet that served the emulator; the Jobs are now
the real controller-manager's.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import shutil
import signal
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp

from kubetune_operator.localrun.pod import PodSpecError
from kubetune_operator.runtime.kube import ApiError, KubeApi
from tests.cluster.node.pods import NotReady, PodResolver
from tests.cluster.node.runtime import Container, Runtime, StartError

log = logging.getLogger(__name__)

STRATEGIC = "application/strategic-merge-patch+json"
LEASE_SECONDS = 40
RENEW_SECONDS = 10
RETRY_SECONDS = 1.0
KUBELET_VERSION = "v1.37.2"


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class NodeShape:
    name: str
    gpus: int = 0
    cpu: str = "64"
    memory: str = "512Gi"
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[Mapping[str, str], ...] = ()

    def manifest(self) -> dict[str, Any]:
        labels = {"kubernetes.io/hostname": self.name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                  "kubetune.dev/node-agent": "true", **self.labels}
        return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.name, "labels": labels},
                "spec": {"taints": [dict(t) for t in self.taints]} if self.taints else {}}

    def status(self) -> dict[str, Any]:
        capacity = {"cpu": self.cpu, "memory": self.memory, "pods": "110", "ephemeral-storage": "1Ti"}
        if self.gpus:
            capacity["nvidia.com/gpu"] = str(self.gpus)
        stamp = now()
        conditions = [{"type": kind, "status": "False", "reason": f"KubeletHas{reason}", "message": "node agent",
                       "lastHeartbeatTime": stamp, "lastTransitionTime": stamp}
                      for kind, reason in (("MemoryPressure", "SufficientMemory"), ("DiskPressure", "NoDiskPressure"),
                                           ("PIDPressure", "SufficientPID"))]
        conditions.append({"type": "Ready", "status": "True", "reason": "KubeletReady",
                           "message": "the node agent is posting ready status", "lastHeartbeatTime": stamp,
                           "lastTransitionTime": stamp})
        return {"status": {
            "capacity": capacity, "allocatable": capacity, "conditions": conditions,
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": self.name}],
            "nodeInfo": {"kubeletVersion": KUBELET_VERSION, "kubeProxyVersion": "", "operatingSystem": "linux",
                         "architecture": "amd64", "containerRuntimeVersion": "kubetune-node-agent://1",
                         "osImage": "kubetune node agent", "kernelVersion": "", "machineID": "", "systemUUID": "",
                         "bootID": ""},
        }}


GPU_POOL = {"nvidia.com/gpu.present": "true", "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
            "nvidia.com/gpu.count": "8", "node.kubernetes.io/instance-type": "gpu-8x-h100"}
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
DEFAULT_NODES = (
    NodeShape("kt-system", labels={"node-role.kubernetes.io/system": ""}),
    NodeShape("kt-gpu-0", gpus=8, labels=GPU_POOL, taints=(GPU_TAINT,)),
    NodeShape("kt-gpu-1", gpus=8, labels=GPU_POOL, taints=(GPU_TAINT,)),
)


@dataclass
class _Pod:
    uid: str
    namespace: str
    name: str
    pod: dict[str, Any]
    container: Container | None = None
    waiter: asyncio.Task | None = None
    restarts: int = 0
    started: str = ""
    stopping: bool = False
    final: bool = False
    last: dict[str, Any] | None = None  # the previous run's terminated state


class NodeAgent:
    def __init__(self, api: KubeApi, api_port: int, workdir: Path, runtime: Runtime,
                 nodes: tuple[NodeShape, ...] = DEFAULT_NODES):
        self.api = api
        self.resolver = PodResolver(api, api_port)
        self.workdir = Path(workdir)
        self.runtime = runtime
        self.nodes = nodes
        self._pods: dict[str, _Pod] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task] = set()
        self._loops: list[asyncio.Task] = []
        self._executor = ThreadPoolExecutor(max_workers=256, thread_name_prefix="node-agent")

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        for node in self.nodes:
            await self._register(node)
        self._loops = [asyncio.create_task(self._renew_leases())]
        self._loops += [asyncio.create_task(self._watch_pods(node.name)) for node in self.nodes]

    async def stop(self) -> None:
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        for run in list(self._pods.values()):
            run.stopping = True
            if run.container is not None:
                run.container.signal(signal.SIGTERM)
        waiters = [run.waiter for run in self._pods.values() if run.waiter is not None]
        if waiters:
            _, pending = await asyncio.wait(waiters, timeout=10)
            for run in self._pods.values():
                if run.container is not None and run.waiter in pending:
                    run.container.signal(signal.SIGKILL)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, *waiters, return_exceptions=True)
        self._executor.shutdown(wait=False, cancel_futures=True)

    def pid(self, namespace: str, name: str) -> int | None:
        """The process id of a running pod's container (for measurements), None when none runs."""
        for run in self._pods.values():
            if (run.namespace, run.name) == (namespace, name) and run.container is not None:
                return getattr(run.container, "pid", None)
        return None

    def running(self, namespace: str | None = None) -> list[str]:
        """namespace/name of the pods whose container runs now."""
        return [f"{r.namespace}/{r.name}" for r in self._pods.values()
                if r.container is not None and namespace in (None, r.namespace)]

    # --- nodes -----------------------------------------------------------------------------------

    async def _register(self, node: NodeShape) -> None:
        try:
            await self.api.request("POST", "/api/v1/nodes", node.manifest())
        except ApiError as exc:
            if exc.status != 409:
                raise
        await self.api.request("PATCH", f"/api/v1/nodes/{node.name}/status", node.status(), content_type=STRATEGIC)
        lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                 "metadata": {"name": node.name, "namespace": "kube-node-lease"},
                 "spec": {"holderIdentity": node.name, "leaseDurationSeconds": LEASE_SECONDS,
                          "renewTime": micro_now()}}
        try:
            await self.api.request("POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", lease)
        except ApiError as exc:
            if exc.status != 409:
                raise

    async def _renew_leases(self) -> None:
        beats = 0
        while True:
            await asyncio.sleep(RENEW_SECONDS)
            beats += 1
            for node in self.nodes:
                try:
                    await self.api.request(
                        "PATCH", f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{node.name}",
                        {"spec": {"renewTime": micro_now()}}, content_type="application/merge-patch+json")
                    if beats % 6 == 0:  # node status, as a kubelet reports it unchanged: now and then
                        await self.api.request("PATCH", f"/api/v1/nodes/{node.name}/status", node.status(),
                                               content_type=STRATEGIC)
                except (ApiError, aiohttp.ClientError, TimeoutError) as exc:
                    log.warning("heartbeat of node %s failed: %s", node.name, exc)

    # --- pods ------------------------------------------------------------------------------------

    async def _watch_pods(self, node: str) -> None:
        selector = {"fieldSelector": f"spec.nodeName={node}"}
        version = None
        while True:
            try:
                if version is None:
                    listing = await self.api.request("GET", "/api/v1/pods", params=selector)
                    version = listing["metadata"]["resourceVersion"]
                    seen = set()
                    for pod in listing.get("items") or []:
                        seen.add(pod["metadata"]["uid"])
                        self._kick(pod)
                    for uid, run in list(self._pods.items()):
                        if run.pod["spec"].get("nodeName") == node and uid not in seen:
                            self._kick(run.pod, gone=True)
                async for event in self._watch("/api/v1/pods", selector | {"resourceVersion": version}):
                    kind, obj = event["type"], event["object"]
                    if kind == "ERROR":
                        if obj.get("code") == 410:
                            version = None
                            break
                        raise ApiError(obj.get("code") or 500, "WATCH", "/api/v1/pods", obj.get("message", ""))
                    version = obj["metadata"]["resourceVersion"]
                    if kind != "BOOKMARK":
                        self._kick(obj, gone=kind == "DELETED")
            except asyncio.CancelledError:
                raise
            except (ApiError, aiohttp.ClientError, TimeoutError, OSError) as exc:
                if isinstance(exc, ApiError) and exc.status == 410:
                    version = None
                log.info("pod watch of %s interrupted (%s); watching again", node, exc)
                await asyncio.sleep(RETRY_SECONDS)

    async def _watch(self, path: str, params: Mapping[str, str]):
        session, server = await self.api._ensure_session()
        query = urlencode({**params, "watch": "true", "allowWatchBookmarks": "true", "timeoutSeconds": "300"})
        timeout = aiohttp.ClientTimeout(total=None, sock_read=360)
        async with session.get(f"{server}{path}?{query}", timeout=timeout) as response:
            if response.status >= 400:
                raise ApiError(response.status, "WATCH", path, await response.text())
            async for line in response.content:
                if line.strip():
                    yield json.loads(line)

    def _kick(self, pod: dict[str, Any], gone: bool = False) -> None:
        task = asyncio.create_task(self._sync(pod, gone))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _sync(self, pod: dict[str, Any], gone: bool) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        lock = self._locks.setdefault(uid, asyncio.Lock())
        async with lock:
            run = self._pods.get(uid)
            if run is not None:
                run.pod = pod
            try:
                if gone:
                    await self._forget(uid, kill=True)
                elif meta.get("deletionTimestamp"):
                    await self._terminate(pod, run)
                elif run is None and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
                    await self._start(pod)
            except (ApiError, aiohttp.ClientError, TimeoutError) as exc:
                if isinstance(exc, ApiError) and exc.status == 404:
                    await self._forget(uid, kill=True)
                    return
                log.warning("pod %s/%s: %s; trying again", meta["namespace"], meta["name"], exc)
                self._later(pod)

    def _later(self, pod: dict[str, Any], delay: float = RETRY_SECONDS) -> None:
        async def again() -> None:
            while True:
                await asyncio.sleep(delay)
                try:
                    current = await self.api.request("GET", _path(pod))
                except ApiError as exc:
                    if exc.status == 404:
                        await self._forget(pod["metadata"]["uid"], kill=True)
                        return
                except (aiohttp.ClientError, TimeoutError, OSError):
                    continue
                else:
                    self._kick(current)
                    return

        task = asyncio.create_task(again())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _start(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        workdir = self.workdir / meta["namespace"] / f"{meta['name']}-{meta['uid'][:8]}"
        container = pod["spec"]["containers"][0]
        try:
            spec = await self.resolver.container(pod, workdir)
        except (NotReady, PodSpecError) as exc:
            await self._status(pod, {"phase": "Pending", "containerStatuses": [_waiting(
                container, "CreateContainerConfigError", str(exc))]})
            self._later(pod, 2.0)
            return
        run = _Pod(uid=meta["uid"], namespace=meta["namespace"], name=meta["name"], pod=pod)
        self._pods[run.uid] = run
        await self._run(run, spec)

    async def _run(self, run: _Pod, spec) -> None:
        try:
            run.container = self.runtime.start(spec)
        except StartError as exc:
            run.final = run.pod["spec"].get("restartPolicy", "Always") == "Never"
            await self._status(run.pod, {
                "phase": "Failed" if run.final else "Pending",
                "containerStatuses": [_terminated(run.pod["spec"]["containers"][0], run.restarts, 128, "StartError",
                                                  str(exc), now(), now())]})
            if not run.final:
                self._restart_later(run, spec)
            return
        run.started = now()
        await self._status(run.pod, {
            "phase": "Running", "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}], "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}], "startTime": (run.pod.get("status") or {}).get("startTime") or run.started,
            "conditions": _conditions(ready=True),
            "containerStatuses": [{
                "name": spec.name, "image": spec.image, "imageID": "", "containerID": f"node-agent://{run.uid}",
                "ready": True, "started": True, "restartCount": run.restarts,
                "state": {"running": {"startedAt": run.started}}, **_last(run)}],
        })
        run.waiter = asyncio.create_task(self._wait(run, spec))

    async def _wait(self, run: _Pod, spec) -> None:
        container = run.container
        result = await asyncio.get_running_loop().run_in_executor(self._executor, container.wait)
        finished = now()
        async with self._locks.setdefault(run.uid, asyncio.Lock()):
            run.container = None
            policy = run.pod["spec"].get("restartPolicy", "Always")
            restart = not run.stopping and (policy == "Always" or (policy == "OnFailure" and result.code != 0))
            terminated = _terminated(run.pod["spec"]["containers"][0], run.restarts, result.code,
                                     "Completed" if result.code == 0 else "Error", result.message, run.started,
                                     finished)
            run.last = terminated["state"]["terminated"]
            if restart:
                run.restarts += 1
                with contextlib.suppress(ApiError):
                    await self._status(run.pod, {"phase": "Running", "conditions": _conditions(ready=False),
                                                 "containerStatuses": [_waiting(run.pod["spec"]["containers"][0],
                                                                                "CrashLoopBackOff", "back-off",
                                                                                run.restarts, run.last)]})
                self._restart_later(run, spec)
                return
            run.final = True
            with contextlib.suppress(ApiError):
                await self._final_status(run, terminated, result.code)

    async def _final_status(self, run: _Pod, terminated: dict[str, Any], code: int) -> None:
        await self._status(run.pod, {"phase": "Succeeded" if code == 0 else "Failed",
                                     "conditions": _conditions(ready=False),
                                     "containerStatuses": [terminated]})

    def _restart_later(self, run: _Pod, spec) -> None:
        delay = min(10 * 2 ** max(run.restarts - 1, 0), 60) if run.restarts > 1 else 1

        async def again() -> None:
            await asyncio.sleep(delay)
            async with self._locks.setdefault(run.uid, asyncio.Lock()):
                if not run.stopping and run.uid in self._pods:
                    await self._run(run, spec)

        task = asyncio.create_task(again())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _terminate(self, pod: dict[str, Any], run: _Pod | None) -> None:
        """The pod is being deleted: stop its container (SIGTERM, SIGKILL after the grace period),
        write its final status and confirm the deletion (grace 0), as a kubelet does."""
        meta = pod["metadata"]
        if run is not None and run.stopping and run.waiter is not None and not run.waiter.done():
            return  # another event's sync is stopping it, and confirms the deletion when it has stopped
        if run is not None and not run.stopping:
            run.stopping = True
            if run.container is not None:
                run.container.signal(signal.SIGTERM)
                grace = meta.get("deletionGracePeriodSeconds")
                grace = pod["spec"].get("terminationGracePeriodSeconds", 30) if grace is None else grace
                waiter = run.waiter
                self._locks[run.uid].release()
                try:
                    done, _ = await asyncio.wait({waiter}, timeout=max(grace, 0))
                    if not done and run.container is not None:
                        run.container.signal(signal.SIGKILL)
                        await asyncio.wait({waiter}, timeout=30)
                finally:
                    await self._locks[run.uid].acquire()
        try:
            await self.api.request("DELETE", _path(pod), {"gracePeriodSeconds": 0,
                                                          "preconditions": {"uid": meta["uid"]}})
        except ApiError as exc:
            if exc.status not in (404, 409):
                raise
        await self._forget(meta["uid"], kill=False)

    async def _forget(self, uid: str, kill: bool) -> None:
        run = self._pods.pop(uid, None)
        if run is None:
            return
        run.stopping = True
        if kill and run.container is not None:
            run.container.signal(signal.SIGKILL)
        shutil.rmtree(self.workdir / run.namespace / f"{run.name}-{uid[:8]}", ignore_errors=True)

    async def _status(self, pod: Mapping[str, Any], status: dict[str, Any]) -> None:
        """Write the pod's status; like a kubelet, keep trying while the API server is away
        (restarting, starting up): a lost final status would leave its Job running forever."""
        while True:
            try:
                await self.api.request("PATCH", _path(pod) + "/status", {"status": status}, content_type=STRATEGIC)
                return
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                log.info("status of pod %s not written (%s); trying again", _path(pod), exc)
            except ApiError as exc:
                if exc.status not in (429, 500, 503, 504):
                    raise
            await asyncio.sleep(RETRY_SECONDS)


def _path(pod: Mapping[str, Any]) -> str:
    return f"/api/v1/namespaces/{pod['metadata']['namespace']}/pods/{pod['metadata']['name']}"


def _conditions(ready: bool) -> list[dict[str, Any]]:
    stamp = now()
    state = "True" if ready else "False"
    return [{"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": stamp},
            {"type": "Initialized", "status": "True", "lastTransitionTime": stamp},
            {"type": "ContainersReady", "status": state, "lastTransitionTime": stamp},
            {"type": "Ready", "status": state, "lastTransitionTime": stamp}]


def _last(run: _Pod) -> dict[str, Any]:
    return {"lastState": {"terminated": run.last}} if run.last else {}


def _waiting(container: Mapping[str, Any], reason: str, message: str, restarts: int = 0,
             last: Mapping[str, Any] | None = None) -> dict[str, Any]:
    status = {"name": container["name"], "image": container.get("image", ""), "imageID": "", "ready": False,
              "started": False, "restartCount": restarts, "state": {"waiting": {"reason": reason, "message": message}}}
    if last:
        status["lastState"] = {"terminated": dict(last)}
    return status


def _terminated(container: Mapping[str, Any], restarts: int, code: int, reason: str, message: str, started: str,
                finished: str) -> dict[str, Any]:
    terminated = {"exitCode": code, "reason": reason, "startedAt": started or finished, "finishedAt": finished}
    if message:
        terminated["message"] = message
    return {"name": container["name"], "image": container.get("image", ""), "imageID": "", "ready": False,
            "started": False, "restartCount": restarts, "state": {"terminated": terminated}}
