"""A preempted training pod is replaced and resumes from its checkpoint without spending the retry
budget; an operator killed at random points leaves exactly one Job per resource and the right status."""

from __future__ import annotations

import random
import time

from harness import resources as r
from test_pipeline import behave, chain

DATA = "s3://data/prepared/"


def test_a_preempted_pod_is_replaced_and_resumes_from_its_checkpoint(kube, namespace, fake_pods, operator):
    for secret in r.secrets(namespace):
        kube.apply(secret)
    fake_pods.behaviours = {"train": {"*": {
        "summary": r.train_summary(namespace, "sft"),
        "hold": True,
        "state": str(fake_pods.state),
        # As a trainer's upload does, the checkpoint takes a while: the operator sees the pod go.
        "checkpoint_seconds": 2,
        "progress": [{"phase": "train", "step": 2, "total_steps": 4, "percent": 50.0,
                      "checkpoint": "s3://checkpoints/checkpoint-000002"}],
    }}}
    kube.apply(r.finetunejob("sft", namespace, "sft", DATA, backoffLimit=0))
    # Bounds, not expectations: on two loaded cores a pod start or a progress post can take many seconds.
    kube.wait_for(lambda: (fake_pods.state / "started").exists(), 90, "the training pod to start")
    kube.wait_phase("finetunejobs", namespace, "sft", "Running", timeout=60)
    kube.wait_for(lambda: kube.status("finetunejobs", namespace, "sft").get("lastCheckpoint"), 60,
                     "the checkpoint from the progress channel")

    (pod,) = [p["metadata"]["name"] for p in kube.pods(namespace, "sft-train") if p["status"].get("phase") == "Running"]
    with kube.recording("pods", namespace, pod) as states:
        kube.evict(namespace, pod)
        status = kube.wait_phase("finetunejobs", namespace, "sft", {"Succeeded", "Failed"}, timeout=180)

    assert status["phase"] == "Succeeded", status
    assert "resumed from s3://checkpoints/checkpoint-000002" in status["message"]
    assert status["restarts"] == 1
    # The evicted pod's last status, as the kubelet wrote it before its deletion completed.
    evicted = next(s for s in states if (s.get("status") or {}).get("phase") == "Failed")
    assert {c["type"] for c in evicted["status"]["conditions"]} >= {"DisruptionTarget"}
    assert evicted["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 75
    assert [p["status"]["phase"] for p in kube.pods(namespace, "sft-train")] == ["Succeeded"]
    # backoffLimit 0, yet the job went on: the disruption did not count as a failure.
    assert (kube.get("jobs", namespace, "sft-train")["status"].get("failed") or 0) == 0


def test_operator_killed_at_random_points_leaves_one_job_each_and_the_right_status(
    kube, namespace, fake_pods, operator
):
    seed = random.randrange(1 << 30)
    print(f"random seed {seed}")
    rng = random.Random(seed)
    behave(fake_pods, namespace)
    for table in fake_pods.behaviours.values():
        for behaviour in table.values():
            behaviour["seconds"] = 0.4
    for secret in r.secrets(namespace):
        kube.apply(secret)
    for document in chain(namespace):
        kube.apply(document)

    starts = operator.starts
    for _ in range(6):
        # The kill point is the random part of this test, not a wait for a condition.
        time.sleep(rng.uniform(0.0, 1.2))
        operator.kill()

    evalrun = kube.wait_phase("evalruns", namespace, "chain-eval", {"Succeeded", "Failed"}, timeout=90)
    assert evalrun["phase"] == "Succeeded", evalrun
    for plural, name in [("preferencedatasets", "sft-data"), ("preferencedatasets", "dpo-data"),
                         ("finetunejobs", "sft"), ("finetunejobs", "dpo")]:
        assert kube.status(plural, namespace, name)["phase"] == "Succeeded", (plural, name)
    jobs = sorted(job["metadata"]["name"] for job in kube.jobs(namespace))
    assert jobs == ["chain-eval-eval", "chain-eval-promote", "dpo-data-data", "dpo-train", "sft-data-data", "sft-train"]
    for job in jobs:
        # One Job, never deleted and created again: it ran its work exactly once.
        assert len(kube.pods(namespace, job)) == 1, job
    assert evalrun["promotion"]["commit"] == r.promotion_summary()["commit"]
    assert operator.starts == starts + 6


def test_the_operator_recovers_when_kube_apiserver_restarts_mid_run(kube, kube_cluster, namespace, fake_pods, operator):
    for secret in r.secrets(namespace):
        kube.apply(secret)
    fake_pods.behaviours = {"train": {"*": {"summary": r.train_summary(namespace, "sft"), "seconds": 6}}}
    kube.apply(r.finetunejob("sft", namespace, "sft", DATA))
    kube.wait_phase("finetunejobs", namespace, "sft", "Running", timeout=30)

    kube_cluster.control_plane.restart_apiserver()

    # The watches come back: the running job finishes, and a job created after the restart runs.
    status = kube.wait_phase("finetunejobs", namespace, "sft", {"Succeeded", "Failed"}, timeout=90)
    assert status["phase"] == "Succeeded", status
    kube.apply(r.finetunejob("after", namespace, "sft", DATA))
    assert kube.wait_phase("finetunejobs", namespace, "after", {"Succeeded", "Failed"}, timeout=90)["phase"] == "Succeeded"
    assert sorted(j["metadata"]["name"] for j in kube.jobs(namespace)) == ["after-train", "sft-train"]
    assert len(kube.pods(namespace, "sft-train")) == 1
