"""The chart's operator pod runs from the operator image, not from this checkout, when the test
cluster is told to (`make test` does: KUBETUNE_CLUSTER_IMAGES=operator): `helm install` then runs
what users run, under the Deployment's read-only root and user."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.cluster.node.image import ImageRootfs


def test_the_operator_pod_runs_in_the_images_root_read_only(kube_cluster, operator):
    runtime = kube_cluster.runtime
    image = operator.pod()["spec"]["containers"][0]["image"]
    if not isinstance(runtime, ImageRootfs) or image not in runtime.roots:
        pytest.skip(f"the cluster runs {image} from this checkout's venv (KUBETUNE_CLUSTER_IMAGES=operator runs the image)")
    uid = operator.pod()["metadata"]["uid"]
    run = next(r for r in kube_cluster.agent._pods.values() if r.uid == uid)
    pid = run.container.process.pid
    root = runtime.roots[image][0]
    assert Path(os.readlink(f"/proc/{pid}/root")) == root
    assert os.readlink(f"/proc/{pid}/exe").startswith(f"{root}/usr/bin/python3")  # the image's Python
    mounts = {fields[4]: fields[5].split(",") for fields in
              (line.split() for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines())}
    assert "ro" in mounts["/"] and "rw" in mounts["/tmp"], mounts
    status = dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":\t" in line)
    assert status["Uid"].split()[0] == "10001" and int(status["CapEff"], 16) == 0 and status["NoNewPrivs"].strip() == "1"
