"""A blocking client for tests: the admin's REST calls, kubectl and helm against the test cluster."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
import urllib.error
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

import yaml

from kubetune_operator.api import KINDS
from kubetune_operator.api.resource import GROUP, VERSION

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
# plural → API path prefix, for what tests touch.
PATHS = {
    **{model.plural: f"/apis/{GROUP}/{VERSION}" for model in KINDS.values()},
    "jobs": "/apis/batch/v1", "deployments": "/apis/apps/v1", "leases": "/apis/coordination.k8s.io/v1",
    **{plural: "/api/v1" for plural in ("pods", "configmaps", "secrets", "services", "events", "serviceaccounts")},
}
KIND_PLURALS = {**{model.kind_name: model.plural for model in KINDS.values()},
                "Job": "jobs", "Pod": "pods", "ConfigMap": "configmaps", "Secret": "secrets", "Service": "services",
                "Deployment": "deployments", "ServiceAccount": "serviceaccounts"}


class TimedOut(AssertionError):
    pass


class ApiRefused(Exception):
    """A non-2xx answer, with the server's Status message."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


class Kube:
    """What tests do with the cluster, as its admin (`request` is `ControlPlane.request`)."""

    def __init__(self, request: Callable[..., Any], env: Mapping[str, str]):
        self._request = request
        self.env = dict(env)

    def request(self, method: str, path: str, body: Any = None, missing: Any = ..., **kwargs: Any) -> Any:
        try:
            return self._request(method, path, body, missing=missing, **kwargs)
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")
            try:
                message = json.loads(text).get("message", text)
            except ValueError:
                message = text
            raise ApiRefused(exc.code, message) from None

    @staticmethod
    def path(plural: str, namespace: str | None, name: str | None = None, subresource: str | None = None) -> str:
        path = PATHS[plural] + (f"/namespaces/{quote(namespace)}" if namespace else "") + f"/{plural}"
        if name:
            path += f"/{quote(name)}"
        if subresource:
            path += f"/{subresource}"
        return path

    # --- objects -------------------------------------------------------------------------------

    def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Create an object (kubetune's kinds and the core kinds tests use)."""
        namespace = manifest["metadata"].get("namespace", "default")
        return self.request("POST", self.path(KIND_PLURALS[manifest["kind"]], namespace), manifest)

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.request("GET", self.path(plural, namespace, name), missing=None)

    def list(self, plural: str, namespace: str | None, labels: Mapping[str, str] | None = None,
             fields: str | None = None) -> list[dict[str, Any]]:
        query = {}
        if labels:
            query["labelSelector"] = ",".join(f"{k}={v}" for k, v in labels.items())
        if fields:
            query["fieldSelector"] = fields
        path = self.path(plural, namespace) + (f"?{urlencode(query)}" if query else "")
        return self.request("GET", path)["items"]

    def patch(self, plural: str, namespace: str, name: str, patch: Mapping[str, Any],
              subresource: str | None = None) -> dict[str, Any]:
        return self.request("PATCH", self.path(plural, namespace, name, subresource), patch,
                            content_type="application/merge-patch+json")

    def delete(self, plural: str, namespace: str, name: str, **options: Any) -> bool:
        body = {"propagationPolicy": "Background", **options}
        return self.request("DELETE", self.path(plural, namespace, name), body, missing=False) is not False

    def create_namespace(self, name: str, labels: Mapping[str, str] | None = None) -> None:
        self.request("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                    "metadata": {"name": name, "labels": dict(labels or {})}})

    def status(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        return (self.get(plural, namespace, name) or {}).get("status") or {}

    def jobs(self, namespace: str) -> list[dict[str, Any]]:
        return self.list("jobs", namespace)

    def pods(self, namespace: str, job: str | None = None, labels: Mapping[str, str] | None = None) -> list[dict]:
        return self.list("pods", namespace, {"batch.kubernetes.io/job-name": job} if job else labels)

    def events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        events = self.list("events", namespace, fields=f"involvedObject.name={name}")
        return sorted(events, key=lambda e: (e.get("firstTimestamp") or e.get("eventTime") or "",
                                             e["metadata"].get("creationTimestamp") or ""))

    def evict(self, namespace: str, pod: str) -> None:
        """The Eviction API, as `kubectl drain` and preemption use it: the server marks the pod
        DisruptionTarget and deletes it gracefully."""
        self.request("POST", self.path("pods", namespace, pod, "eviction"),
                     {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": pod, "namespace": namespace}})

    @contextlib.contextmanager
    def recording(self, kind: str, namespace: str, name: str) -> Iterator[list[dict]]:
        """Every state of one object while the block runs, from `kubectl get -w`: states a poll
        could miss, such as a pod's last status before its deletion completes."""
        watcher = subprocess.Popen(["kubectl", "get", kind, name, "-n", namespace, "-w", "-o", "json"],
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=self.env)
        seen: list[dict] = []
        try:
            yield seen
        finally:
            watcher.terminate()
            text, _ = watcher.communicate(timeout=30)
            decoder, at = json.JSONDecoder(), 0
            while (at := len(text) - len(text[at:].lstrip())) < len(text):
                obj, at = decoder.raw_decode(text, at)
                seen.append(obj)

    # --- waiting ---------------------------------------------------------------------------------

    def wait_for(self, probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1) -> T:
        """Poll `probe` until it returns something truthy; fail naming `what` and the last value."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = probe()
            if last:
                return last
            time.sleep(interval)
        raise TimedOut(f"timed out after {timeout}s waiting for {what}; last seen: {last!r}")

    def wait_phase(self, plural: str, namespace: str, name: str, phases: str | set[str],
                   timeout: float) -> dict[str, Any]:
        wanted = {phases} if isinstance(phases, str) else set(phases)

        def probe():
            status = self.status(plural, namespace, name)
            return status if status.get("phase") in wanted else None

        return self.wait_for(probe, timeout, f"{plural}/{name} in phase {sorted(wanted)}")

    # --- the command-line tools users type --------------------------------------------------------

    def run(self, argv: Sequence[str], input: str | None = None, check: bool = True,
            timeout: float = 300) -> subprocess.CompletedProcess:
        done = subprocess.run(list(argv), input=input, capture_output=True, text=True, env=self.env, cwd=ROOT,
                              timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return done

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 300) -> subprocess.CompletedProcess:
        return self.run(["kubectl", *args], input=input, check=check, timeout=timeout)

    def helm(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        return self.run(["helm", *args], check=check, timeout=timeout)

    def kubectl_apply(self, documents: Sequence[Mapping[str, Any]], *args: str, check: bool = True):
        return self.kubectl("apply", "-f", "-", *args, input=yaml.safe_dump_all(list(documents)), check=check)
