"""pytest fixtures on the real control plane: one cluster per test session (started on first use),
the CRDs, a namespace per test under the restricted Pod Security Standard, and fake containers."""

from __future__ import annotations

import base64
import datetime
import json
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.client import ROOT, Kube
from tests.cluster.cluster import LocalCluster
from tests.cluster.control_plane import AUDITED_NAMESPACE, free_port

FAKE_POD = ROOT / "tests" / "integration" / "harness" / "fake_pod.py"
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest"}


def component(argv: list[str]) -> str:
    """Which kubetune command a container runs: data, train, eval or promote."""
    words = [Path(a).name for a in argv[:6]]
    for word in ("prepare", "train", "eval", "promote"):
        if word in words:
            return "data" if word == "prepare" else word
    raise AssertionError(f"not a kubetune container command: {argv}")


class FakePods:
    """What each kind of container does in one test's namespace: `behaviours[component][resource
    name or "*"]` (see tests/integration/harness/fake_pod.py)."""

    def __init__(self, state: Path):
        self.state = state
        self.behaviours: dict[str, dict[str, dict[str, Any]]] = {}
        self.commands: list[list[str]] = []

    def command(self, argv: list[str]) -> list[str]:
        self.commands.append(list(argv))
        behaviour = self.behaviours.get(component(argv))
        if behaviour is None:
            raise AssertionError(f"the test set no behaviour for {component(argv)}: {argv}")
        # -P: the harness directory must not shadow standard modules in the fake container.
        return [sys.executable, "-P", str(FAKE_POD), json.dumps(behaviour)]


class FakeImages:
    """The node agent's command map: kubetune containers in a namespace that registered fakes run
    fake_pod.py; everything else (the operator, e2e trainers) runs for real."""

    def __init__(self) -> None:
        self.namespaces: dict[str, FakePods] = {}

    def __call__(self, namespace: str, argv: list[str]) -> list[str] | None:
        fakes = self.namespaces.get(namespace)
        return fakes.command(argv) if fakes is not None else None


FAKES = FakeImages()


@pytest.fixture(scope="session")
def kube_cluster(tmp_path_factory) -> Iterator[LocalCluster]:
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster"), command_map=FAKES)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def kube(kube_cluster: LocalCluster) -> Kube:
    return Kube(kube_cluster.control_plane.request, kube_cluster.env())


RELEASE, SYSTEM = "kubetune", AUDITED_NAMESPACE
OPERATOR_USER = f"system:serviceaccount:{SYSTEM}:{RELEASE}"
# Faster resyncs and progress writes than production, so tests wait seconds, not minutes.
TEST_ENV = [{"name": "KUBETUNE_RESYNC_INTERVAL", "value": "2"},
            {"name": "KUBETUNE_PROGRESS_PATCH_INTERVAL", "value": "0.2"}]


def install(ports: dict[str, int], *values: str) -> list[str]:
    """`helm install` as docs/install.md gives it, with the operator's ports: pods share this
    machine's network, so each cluster's operator takes free ones (another may run beside it)."""
    return ["install", RELEASE, "charts/kubetune", "-n", SYSTEM, "--create-namespace",
            "--set", "artifacts.root=s3://artifacts/kubetune", "--set", "storage.secretName=kubetune-s3",
            *(f"--set=operator.ports.{name}={port}" for name, port in ports.items()), *values]


def free_ports() -> dict[str, int]:
    return {name: free_port() for name in ("progress", "metrics", "health")}


def _get(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.read() if answer.status == 200 else None
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


class OperatorPod:
    """The operator as the chart runs it: the Deployment's pod, under the chart's ServiceAccount."""

    def __init__(self, kube: Kube, cluster: LocalCluster, ports: dict[str, int]):
        self.kube = kube
        self.cluster = cluster
        self.ports = ports
        self.starts = 0

    @property
    def progress_port(self) -> int:
        return self.ports["progress"]

    def pods(self) -> list[dict]:
        return self.kube.pods(SYSTEM, labels={"app.kubernetes.io/instance": RELEASE,
                                              "app.kubernetes.io/component": "operator"})

    def pod(self) -> dict:
        running = [p for p in self.pods() if not p["metadata"].get("deletionTimestamp")]
        assert len(running) == 1, [p["metadata"]["name"] for p in running]
        return running[0]

    def wait_ready(self, timeout: float = 90, other_than: str | None = None) -> dict:
        def ready():
            for pod in self.pods():
                conditions = {c["type"]: c["status"] for c in (pod.get("status") or {}).get("conditions") or []}
                if (pod["metadata"]["uid"] != other_than and not pod["metadata"].get("deletionTimestamp")
                        and conditions.get("Ready") == "True" and _get(f"http://127.0.0.1:{self.ports['health']}/healthz")):
                    return pod
            return None

        pod = self.kube.wait_for(ready, timeout, "the operator pod to run and answer /healthz", interval=0.2)
        self.starts += 1
        return pod

    def kill(self) -> None:
        """Delete the pod with no grace (SIGKILL, as when its node dies) and wait for the Deployment's next one."""
        old = self.pod()
        self.kube.delete("pods", SYSTEM, old["metadata"]["name"], gracePeriodSeconds=0)
        self.wait_ready(other_than=old["metadata"]["uid"])

    def progress_key(self) -> bytes:
        """The key the chart generated for progress tokens (KUBETUNE_PROGRESS_KEY)."""
        secret = self.kube.get("secrets", SYSTEM, f"{RELEASE}-progress-key")
        return base64.b64decode(secret["data"]["key"])

    def metrics(self) -> str:
        text = _get(f"http://127.0.0.1:{self.ports['metrics']}/metrics")
        assert text is not None, "the operator's /metrics did not answer"
        return text.decode()

    def log(self) -> str:
        """Every operator pod's log so far, oldest first."""
        files = sorted((self.cluster.folder / "pods" / SYSTEM).glob("*/operator.log"), key=lambda p: p.stat().st_mtime)
        return "".join(f.read_text(errors="replace") for f in files)

    def audit_offset(self) -> int:
        log = self.cluster.control_plane.audit_log
        return log.stat().st_size if log.exists() else 0

    def requests(self, since: int = 0) -> list[dict[str, Any]]:
        """The operator's API requests since an offset of the audit log, as audit events."""
        log = self.cluster.control_plane.audit_log
        with open(log, "rb") as file:
            file.seek(since)
            lines = file.read().decode(errors="replace").splitlines()
        events = [json.loads(line) for line in lines if line.strip()]
        return [e for e in events if e["user"]["username"] == OPERATOR_USER]


def refused(events: list[dict[str, Any]], restarts: list[tuple[datetime.datetime, datetime.datetime]] = ()) -> list[str]:
    """The requests RBAC refused, as `verb group/resource[/subresource] in namespace`. Not counted:
    a 403 from admission (a namespace being deleted refuses new Events; authorization said allow),
    and one while a restarted API server's RBAC cache fills (`restarts`: its windows)."""
    found = set()
    for event in events:
        annotations = event.get("annotations") or {}
        if (event.get("responseStatus") or {}).get("code") != 403 or annotations.get(
                "authorization.k8s.io/decision") != "forbid":
            continue
        received = datetime.datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00"))
        if any(start <= received <= end for start, end in restarts):
            continue
        ref = event.get("objectRef") or {}
        what = "/".join(filter(None, [ref.get("apiGroup") or "core", ref.get("resource"), ref.get("subresource")]))
        found.add(f"{event['verb']} {what} in {ref.get('namespace') or '(cluster)'}: {event['requestURI']}")
    return sorted(found)


@pytest.fixture(scope="session")
def release(kube: Kube, kube_cluster: LocalCluster) -> OperatorPod:
    """The chart installed as docs/install.md says (its CRDs with it); the operator runs as its pod."""
    began = time.monotonic()
    ports = free_ports()
    kube.helm(*install(ports, "--set-json", f"operator.extraEnv={json.dumps(TEST_ENV)}", "--wait", "--timeout", "180s"))
    operator = OperatorPod(kube, kube_cluster, ports)
    operator.wait_ready()
    print(f"helm install and the operator's start took {time.monotonic() - began:.1f} s")
    return operator


@pytest.fixture(scope="session")
def crds(kube: Kube, release: OperatorPod) -> Kube:
    """kubetune's CRDs, installed from the chart and established."""
    kube.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", "crds/")
    return kube


@pytest.fixture
def operator(release: OperatorPod) -> Iterator[OperatorPod]:
    """The chart's operator; at the end of the test, no request it made may have been refused by RBAC."""
    since = release.audit_offset()
    log_start = len(release.log())
    yield release
    print(f"--- operator log (last 6000 characters) ---\n{release.log()[log_start:][-6000:]}")
    denied = refused(release.requests(since), release.cluster.control_plane.restarts)
    assert not denied, "RBAC refused requests of the operator (the chart's Role misses them):\n" + "\n".join(denied)


@pytest.fixture
def namespace(kube: Kube) -> Iterator[str]:
    """A namespace of this test's own, where pods must meet the restricted Pod Security Standard."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    kube.create_namespace(name, RESTRICTED)
    kube.wait_for(lambda: kube.get("serviceaccounts", name, "default"), 30, f"the default ServiceAccount of {name}")
    yield name
    # The namespace controller deletes what the test left, and the node agent stops its pods.
    kube.request("DELETE", f"/api/v1/namespaces/{name}", missing=None)


@pytest.fixture
def fake_pods(namespace: str, tmp_path: Path) -> Iterator[FakePods]:
    state = tmp_path / "state"
    state.mkdir()
    fakes = FakePods(state)
    FAKES.namespaces[namespace] = fakes
    yield fakes
    FAKES.namespaces.pop(namespace, None)
