"""The chart on a real cluster: the operator runs as the Deployment's pod under its ServiceAccount,
RBAC refuses what the Role does not grant, and `helm upgrade` and `helm uninstall` leave the
custom resources, their Jobs and the data in S3 alone."""

from __future__ import annotations

import json

import boto3
from harness import resources as r

from tests.cluster.testing import OPERATOR_USER, RELEASE, SYSTEM, TEST_ENV, install

DATA = "s3://data/prepared/"


def test_the_operator_runs_as_the_charts_pod_under_its_service_account(kube, operator):
    pod = operator.pod()
    assert pod["spec"]["serviceAccountName"] == RELEASE
    mounted = {m["mountPath"] for m in pod["spec"]["containers"][0]["volumeMounts"]}
    assert "/var/run/secrets/kubernetes.io/serviceaccount" in mounted
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    # It logged in with that token: the API server saw its requests under the account's name.
    kube.wait_for(lambda: any(e["verb"] == "watch" and e["objectRef"]["resource"] == "finetunejobs"
                              for e in operator.requests()), 30, "the operator's watch of FineTuneJobs")
    assert {e["user"]["username"] for e in operator.requests()} == {OPERATOR_USER}


def test_rbac_refuses_what_the_charts_role_does_not_grant(kube, release):
    def can(verb: str, resource: str, namespace: str = "default") -> bool:
        review = kube.request("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", {
            "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": {"user": OPERATOR_USER, "groups": ["system:serviceaccounts", f"system:serviceaccounts:{SYSTEM}"],
                     "resourceAttributes": {"verb": verb, "resource": resource, "namespace": namespace,
                                            "group": "batch" if resource == "jobs" else ""}}})
        return review["status"]["allowed"]

    assert can("create", "jobs") and can("create", "secrets") and can("list", "pods")
    assert not can("get", "secrets") and not can("list", "secrets") and not can("delete", "jobs")
    assert not can("create", "pods") and not can("update", "configmaps")


def test_helm_upgrade_and_uninstall_leave_resources_jobs_and_s3_data(kube, namespace, fake_pods, operator, s3_bucket):
    for secret in r.secrets(namespace):
        kube.apply(secret)
    fake_pods.behaviours = {"train": {"*": {"summary": r.train_summary(namespace, "sft")}}}
    kube.apply(r.finetunejob("sft", namespace, "sft", DATA))
    kube.wait_phase("finetunejobs", namespace, "sft", "Succeeded", timeout=60)
    s3 = boto3.client("s3")
    s3.put_object(Bucket=s3_bucket, Key="kubetune/adapter_model.safetensors", Body=b"weights")
    before = kube.get("finetunejobs", namespace, "sft")

    old = operator.pod()["metadata"]["uid"]
    kube.helm("upgrade", RELEASE, "charts/kubetune", "-n", SYSTEM, "--reuse-values", "--set", "operator.logLevel=DEBUG",
              "--wait", "--timeout", "180s")
    operator.wait_ready(other_than=old)
    assert kube.get("finetunejobs", namespace, "sft")["metadata"]["uid"] == before["metadata"]["uid"]
    # The upgraded operator works: a new resource runs.
    kube.apply(r.finetunejob("after-upgrade", namespace, "sft", DATA))
    kube.wait_phase("finetunejobs", namespace, "after-upgrade", "Succeeded", timeout=60)

    kube.helm("uninstall", RELEASE, "-n", SYSTEM, "--wait", "--timeout", "180s")
    try:
        kube.wait_for(lambda: not operator.pods(), 60, "the operator pod to go")
        for name in ("sft", "after-upgrade"):
            kept = kube.get("finetunejobs", namespace, name)
            assert kept is not None and kept["status"]["phase"] == "Succeeded", name
            assert kube.get("jobs", namespace, f"{name}-train") is not None, name
        assert kube.request("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/finetunejobs.kubetune.dev")
        assert s3.get_object(Bucket=s3_bucket, Key="kubetune/adapter_model.safetensors")["Body"].read() == b"weights"
        assert kube.get("deployments", SYSTEM, RELEASE) is None
    finally:
        # The rest of the session keeps its operator (with the same values as at first).
        kube.helm(*install(operator.ports, "--set-json", f"operator.extraEnv={json.dumps(TEST_ENV)}", "--wait",
                           "--timeout", "180s"))
        operator.wait_ready()
    # The new operator reads the world back and leaves finished work alone.
    assert kube.status("finetunejobs", namespace, "sft")["phase"] == "Succeeded"
    assert len(kube.pods(namespace, "sft-train")) == 1
