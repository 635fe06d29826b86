"""An emulated cluster for tests: the API server on 127.0.0.1, a local kubelet, a sync client.

The emulator and the kubelet run on one event loop in a background thread; tests talk to them
through `Cluster` (blocking calls) and to the API over real HTTP, as the operator does.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any, TypeVar

import kmock
import kopf
import yaml

from harness.emulator import OPERATOR_TOKEN, ClusterEmulator
from kubetune_operator.localrun.kubelet import CommandMap, LocalKubelet
from kubetune_operator.runtime.kube import (
    CORE_RESOURCES,
    CUSTOM_RESOURCES,
    JOBS,
    PODS,
    ApiResource,
    KubeApi,
    resource_for,
)

T = TypeVar("T")
CRD_DIR = Path(__file__).resolve().parents[3] / "crds"


class TimedOut(AssertionError):
    pass


class Cluster:
    def __init__(self, validate: bool = True) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="emulated-cluster", daemon=True)
        self._thread.start()
        self.emulator, self._server = self.call(self._start(validate))
        self.url = f"http://127.0.0.1:{self._server.port}"
        self.api = KubeApi(lambda: kopf.ConnectionInfo(server=self.url))
        self.kubelets: list[LocalKubelet] = []
        for path in sorted(CRD_DIR.glob("*.yaml")):
            self.call(self.api.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                                       yaml.safe_load(path.read_text())))

    @staticmethod
    async def _start(validate: bool) -> tuple[ClusterEmulator, kmock.Server]:
        emulator = ClusterEmulator(validate=validate)
        await emulator.__aenter__()
        server = kmock.Server(emulator)
        await server.__aenter__()
        return emulator, server

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        for kubelet in self.kubelets:
            self.call(kubelet.stop())
        self.call(self.api.close())
        self.call(self._server.__aexit__(None, None, None))
        self.call(self.emulator.__aexit__(None, None, None))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    def write_kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        """A kubeconfig for the operator: its token marks its requests (ClusterEmulator.operator_requests)."""
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "emulator",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": OPERATOR_TOKEN}}],
            "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "tester", "namespace": namespace}}],
        }))
        return path

    def create_namespace(self, name: str) -> None:
        self.call(self.api.request("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                                  "metadata": {"name": name}}))

    def start_kubelet(
        self, namespace: str, workdir: Path, extra_env: Mapping[str, str] | None = None,
        command_map: CommandMap | None = None,
    ) -> LocalKubelet:
        kubelet = LocalKubelet(self.api, namespace, workdir, extra_env=extra_env, command_map=command_map, gpus=0)
        self.call(kubelet.start())
        self.kubelets.append(kubelet)
        return kubelet

    def stop_kubelet(self, kubelet: LocalKubelet) -> None:
        self.kubelets.remove(kubelet)
        self.call(kubelet.stop())

    # --- blocking API calls ----------------------------------------------------------------------

    def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Create a kubetune resource or a core object."""
        namespace = manifest["metadata"].get("namespace", "default")
        return self.call(self.api.create(_resource(manifest), namespace, manifest))[0]

    def get(self, resource: ApiResource | str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.call(self.api.get(_lookup(resource), namespace, name))

    def list(self, resource: ApiResource | str, namespace: str, labels: Mapping[str, str] | None = None) -> list[dict]:
        return self.call(self.api.list(_lookup(resource), namespace, labels))

    def patch(self, resource: ApiResource | str, namespace: str, name: str, patch: Mapping[str, Any],
              subresource: str | None = None) -> dict[str, Any]:
        return self.call(self.api.patch(_lookup(resource), namespace, name, patch, subresource))

    def delete(self, resource: ApiResource | str, namespace: str, name: str) -> bool:
        return self.call(self.api.delete(_lookup(resource), namespace, name))

    def status(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        body = self.get(plural, namespace, name) or {}
        return body.get("status") or {}

    def wait_for(self, probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05) -> T:
        """Poll `probe` until it returns something truthy; fail naming `what` and the last value."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = probe()
            if last:
                return last
            time.sleep(interval)
        raise TimedOut(f"timed out after {timeout}s waiting for {what}; last seen: {last!r}")

    def wait_phase(self, plural: str, namespace: str, name: str, phases: str | set[str], timeout: float) -> dict[str, Any]:
        wanted = {phases} if isinstance(phases, str) else set(phases)

        def probe():
            status = self.status(plural, namespace, name)
            return status if status.get("phase") in wanted else None

        try:
            return self.wait_for(probe, timeout, f"{plural}/{name} in phase {sorted(wanted)}")
        except TimedOut as exc:
            raise TimedOut(f"{exc}\nstatus: {self.status(plural, namespace, name)}") from None

    def jobs(self, namespace: str) -> list[dict[str, Any]]:
        return self.list(JOBS, namespace)

    def pods(self, namespace: str, job: str) -> list[dict[str, Any]]:
        return self.list(PODS, namespace, {"batch.kubernetes.io/job-name": job})

    def events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        return [e for e in self.list("events", namespace) if e["involvedObject"]["name"] == name]


def _lookup(resource: ApiResource | str) -> ApiResource:
    if isinstance(resource, ApiResource):
        return resource
    if resource in CUSTOM_RESOURCES:
        return CUSTOM_RESOURCES[resource]
    return next(r for r in CORE_RESOURCES.values() if r.plural == resource)


def _resource(manifest: Mapping[str, Any]) -> ApiResource:
    for resource in CUSTOM_RESOURCES.values():
        if resource.kind == manifest.get("kind"):
            return resource
    return resource_for(manifest)
