"""pytest fixtures on the real control plane: one cluster per test session (started on first use),
the CRDs, a namespace per test under the restricted Pod Security Standard, and fake containers."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.client import ROOT, Kube
from tests.cluster.cluster import LocalCluster

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


@pytest.fixture(scope="session")
def crds(kube: Kube) -> Kube:
    """kubetune's CRDs, loaded and established."""
    kube.kubectl("apply", "--server-side", "-f", "crds/")
    kube.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", "crds/")
    return kube


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
