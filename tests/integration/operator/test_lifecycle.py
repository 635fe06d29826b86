"""Suspend and resume, Kueue admission, children that already exist, and deletion of children with
their resource (ownerReferences)."""

from __future__ import annotations

from harness import resources as r

from tests.unit.charts.argocd_health import health

DATA = "s3://data/prepared/"


def train_quickly(fake_pods, namespace):
    fake_pods.behaviours = {"train": {"*": {"summary": r.train_summary(namespace, "sft")}}}


def test_suspend_stops_the_job_and_resume_finishes_it(kube, namespace, fake_pods, operator):
    for secret in r.secrets(namespace):
        kube.apply(secret)
    train_quickly(fake_pods, namespace)
    kube.apply(r.finetunejob("sft", namespace, "sft", DATA, suspend=True))

    status = kube.wait_phase("finetunejobs", namespace, "sft", "Suspended", timeout=15)
    assert {c["type"]: c["reason"] for c in status["conditions"]}["Suspended"] == "Suspended"
    assert kube.get("jobs", namespace, "sft-train")["spec"]["suspend"] is True
    assert kube.pods(namespace, "sft-train") == []
    assert health(kube.get("finetunejobs", namespace, "sft"))["status"] == "Suspended"

    kube.patch("finetunejobs", namespace, "sft", {"spec": {"suspend": False}})

    status = kube.wait_phase("finetunejobs", namespace, "sft", "Succeeded", timeout=30)
    conditions = {c["type"]: c for c in status["conditions"]}
    assert (conditions["Suspended"]["status"], conditions["Suspended"]["reason"]) == ("False", "Resumed")
    assert status["observedGeneration"] == 2
    ready = {c["type"]: c for c in status["conditions"]}["Ready"]
    assert (ready["status"], ready["observedGeneration"]) == ("True", 2)
    assert health(kube.get("finetunejobs", namespace, "sft"))["status"] == "Healthy"


def test_a_queued_job_waits_for_kueue_and_the_operator_does_not_admit_it(
    kube, namespace, fake_pods, operator
):
    for secret in r.secrets(namespace):
        kube.apply(secret)
    train_quickly(fake_pods, namespace)
    kube.apply(r.finetunejob("sft", namespace, "sft", DATA, queueName="gpu-training"))

    status = kube.wait_phase("finetunejobs", namespace, "sft", "Suspended", timeout=15)
    suspended = {c["type"]: c for c in status["conditions"]}["Suspended"]
    assert suspended["reason"] == "Queued" and "gpu-training" in suspended["message"]
    job = kube.get("jobs", namespace, "sft-train")
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-training"

    # Kueue admits the workload by unsuspending the Job; the operator follows.
    kube.patch("jobs", namespace, "sft-train", {"spec": {"suspend": False}})

    kube.wait_phase("finetunejobs", namespace, "sft", "Succeeded", timeout=30)


def test_existing_children_are_used_and_deleting_the_resource_deletes_them(kube, namespace, operator):
    # A child already there (a previous operator's, before a crash) is a 409: the operator goes on.
    kube.apply({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "sft-train-config", "namespace": namespace}, "data": {"config.yaml": "{}"}})
    uid = kube.apply(r.finetunejob("sft", namespace, "sft", DATA))["metadata"]["uid"]
    kube.wait_phase("finetunejobs", namespace, "sft", "Pending", timeout=15)
    children = [("jobs", "sft-train"), ("services", "sft-train"), ("secrets", f"sft-progress-{uid}")]
    for plural, name in children:
        owner = kube.get(plural, namespace, name)["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"], owner["controller"]) == ("FineTuneJob", "sft", True)

    kube.delete("finetunejobs", namespace, "sft")

    # The garbage collector follows the ownerReferences, shortly after.
    kube.wait_for(lambda: not [c for c in children if kube.get(*c[:1], namespace, c[1])], 30,
                  "the garbage collector to delete the children")


def test_a_two_node_gpu_training_is_scheduled_onto_the_gpu_pool(kube, namespace, fake_pods, operator):
    # The GPU nodes are tainted nvidia.com/gpu:NoSchedule, as GPU node pools are; 8 GPUs each.
    for secret in r.secrets(namespace):
        kube.apply(secret)
    train_quickly(fake_pods, namespace)
    kube.apply(r.finetunejob("sft", namespace, "sft", DATA, resources={"gpusPerNode": 8, "nodes": 2}))

    kube.wait_phase("finetunejobs", namespace, "sft", "Succeeded", timeout=60)
    pods = kube.pods(namespace, "sft-train")
    assert sorted(p["spec"]["nodeName"] for p in pods) == ["kt-gpu-0", "kt-gpu-1"]
    assert all(p["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "8" for p in pods)


def test_pod_plumbing_passes_restricted_admission_and_reaches_the_pod(kube, namespace, fake_pods, operator):
    for secret in r.secrets(namespace):
        kube.apply(secret)
    kube.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "egress", "namespace": namespace},
                "data": {"HTTPS_PROXY": "http://proxy.internal:3128", "ca.pem": "-----BEGIN CERTIFICATE-----"}})
    train_quickly(fake_pods, namespace)
    pod_options = {
        "env": [{"name": "GREETING", "value": "$(HOME) stays"},
                {"name": "PROXY", "valueFrom": {"configMapKeyRef": {"name": "egress", "key": "HTTPS_PROXY"}}}],
        "envFrom": [{"configMapRef": {"name": "egress"}, "prefix": "EGRESS_"}],
        "volumes": [{"name": "internal-ca", "configMap": {"name": "egress"}},
                    {"name": "work", "emptyDir": {"sizeLimit": "1Gi"}}],
        "volumeMounts": [{"name": "internal-ca", "mountPath": "/etc/internal-ca", "readOnly": True},
                         {"name": "work", "mountPath": "/work"}],
    }
    kube.apply(r.finetunejob("sft", namespace, "sft", DATA, pod=pod_options,
                             resources={"gpusPerNode": 0, "cpu": "1", "memory": "1Gi", "ephemeralStorage": "2Gi"}))

    # The namespace enforces the restricted Pod Security Standard: an inadmissible pod never runs.
    kube.wait_phase("finetunejobs", namespace, "sft", "Succeeded", timeout=30)
    (pod,) = kube.pods(namespace, "sft-train")
    container = pod["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["GREETING"]["value"] == "$$(HOME) stays"
    assert env["PROXY"]["valueFrom"]["configMapKeyRef"] == {"name": "egress", "key": "HTTPS_PROXY", "optional": False}
    assert container["envFrom"] == [{"configMapRef": {"name": "egress", "optional": False}, "prefix": "EGRESS_"}]
    assert container["resources"]["requests"]["ephemeral-storage"] == "2Gi"
    assert {"internal-ca", "work", "scratch"} <= {v["name"] for v in pod["spec"]["volumes"]}
