"""Suspend and resume, Kueue admission, children that already exist, and deletion of children with
their resource (ownerReferences)."""

from __future__ import annotations

from harness import resources as r

DATA = "s3://data/prepared/"


def train_quickly(fake_pods, namespace):
    fake_pods.behaviours = {"train": {"*": {"summary": r.train_summary(namespace, "sft")}}}


def test_suspend_stops_the_job_and_resume_finishes_it(cluster, namespace, kubelet, fake_pods, operator):
    for secret in r.secrets(namespace):
        cluster.apply(secret)
    train_quickly(fake_pods, namespace)
    cluster.apply(r.finetunejob("sft", namespace, "sft", DATA, suspend=True))

    status = cluster.wait_phase("finetunejobs", namespace, "sft", "Suspended", timeout=15)
    assert {c["type"]: c["reason"] for c in status["conditions"]}["Suspended"] == "Suspended"
    assert cluster.get("jobs", namespace, "sft-train")["spec"]["suspend"] is True
    assert cluster.pods(namespace, "sft-train") == []

    cluster.patch("finetunejobs", namespace, "sft", {"spec": {"suspend": False}})

    status = cluster.wait_phase("finetunejobs", namespace, "sft", "Succeeded", timeout=30)
    conditions = {c["type"]: c for c in status["conditions"]}
    assert (conditions["Suspended"]["status"], conditions["Suspended"]["reason"]) == ("False", "Resumed")
    assert status["observedGeneration"] == 2


def test_a_queued_job_waits_for_kueue_and_the_operator_does_not_admit_it(
    cluster, namespace, kubelet, fake_pods, operator
):
    for secret in r.secrets(namespace):
        cluster.apply(secret)
    train_quickly(fake_pods, namespace)
    cluster.apply(r.finetunejob("sft", namespace, "sft", DATA, queueName="gpu-training"))

    status = cluster.wait_phase("finetunejobs", namespace, "sft", "Suspended", timeout=15)
    suspended = {c["type"]: c for c in status["conditions"]}["Suspended"]
    assert suspended["reason"] == "Queued" and "gpu-training" in suspended["message"]
    job = cluster.get("jobs", namespace, "sft-train")
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-training"

    # Kueue admits the workload by unsuspending the Job; the operator follows.
    cluster.patch("jobs", namespace, "sft-train", {"spec": {"suspend": False}})

    cluster.wait_phase("finetunejobs", namespace, "sft", "Succeeded", timeout=30)


def test_existing_children_are_used_and_deleting_the_resource_deletes_them(cluster, namespace, operator):
    # A child already there (a previous operator's, before a crash) is a 409: the operator goes on.
    cluster.apply({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "sft-train-config", "namespace": namespace}, "data": {"config.yaml": "{}"}})
    uid = cluster.apply(r.finetunejob("sft", namespace, "sft", DATA))["metadata"]["uid"]
    cluster.wait_phase("finetunejobs", namespace, "sft", "Pending", timeout=15)
    children = [("jobs", "sft-train"), ("services", "sft-train"), ("secrets", f"sft-progress-{uid}")]
    for plural, name in children:
        owner = cluster.get(plural, namespace, name)["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"], owner["controller"]) == ("FineTuneJob", "sft", True)

    cluster.delete("finetunejobs", namespace, "sft")

    for plural, name in children:
        assert cluster.get(plural, namespace, name) is None, (plural, name)
