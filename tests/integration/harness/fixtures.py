"""pytest fixtures: one emulated cluster per session; per test a namespace, a local kubelet whose
pods run fake containers, and the real operator as a subprocess."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.cluster import Cluster
from harness.operator_process import OperatorProcess
from harness.rbac import refused_by_chart

FAKE_POD = Path(__file__).with_name("fake_pod.py")


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    emulated = Cluster()
    yield emulated
    emulated.close()


@pytest.fixture
def namespace(cluster: Cluster) -> str:
    name = f"t-{uuid.uuid4().hex[:10]}"
    cluster.create_namespace(name)
    return name


def component(argv: list[str]) -> str:
    """Which kubetune command a container runs: data, train, eval or promote."""
    words = [Path(a).name for a in argv[:6]]
    for word in ("prepare", "train", "eval", "promote"):
        if word in words:
            return "data" if word == "prepare" else word
    raise AssertionError(f"not a kubetune container command: {argv}")


class FakePods:
    """What each kind of container does in a test: `behaviours[component][resource name or "*"]`
    (see fake_pod.py)."""

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


@pytest.fixture
def fake_pods(tmp_path: Path) -> FakePods:
    state = tmp_path / "state"
    state.mkdir()
    return FakePods(state)


@pytest.fixture
def kubelet(cluster: Cluster, namespace: str, tmp_path: Path, fake_pods: FakePods):
    started = cluster.start_kubelet(namespace, tmp_path / "pods", command_map=fake_pods.command)
    yield started
    cluster.stop_kubelet(started)


@pytest.fixture
def operator_env() -> dict[str, str]:
    """Environment of the operator process (contracts §10) on top of the harness's own."""
    return {"KUBETUNE_ARTIFACT_ROOT": "s3://artifacts/kubetune"}


@pytest.fixture
def operator(cluster: Cluster, namespace: str, tmp_path: Path, operator_env: dict[str, str]) -> Iterator[OperatorProcess]:
    process = OperatorProcess(cluster.write_kubeconfig(tmp_path / "kubeconfig"), namespace, tmp_path / "operator.log",
                              env=operator_env)
    seen = len(cluster.emulator.operator_requests)
    process.start()
    yield process
    process.stop()
    print(f"--- operator log (last 6000 characters) ---\n{process.log()[-6000:]}")
    refused = refused_by_chart(cluster.emulator.operator_requests[seen:])
    assert not refused, "the chart's RBAC for the operator does not allow:\n" + "\n".join(refused)
