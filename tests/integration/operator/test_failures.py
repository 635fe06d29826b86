"""Failures end in a readable status: bad config fails at once, other errors retry up to the
backoff limit, and the API server refuses invalid specs."""

from __future__ import annotations

import pytest
from harness import resources as r

from tests.cluster.client import ApiRefused
from tests.unit.charts.argocd_health import health

DATA = "s3://data/prepared/"


def setup(kube, namespace):
    for secret in r.secrets(namespace):
        kube.apply(secret)


def test_bad_config_fails_at_once_with_the_trainers_message(kube, namespace, fake_pods, operator):
    setup(kube, namespace)
    fake_pods.behaviours = {"train": {"*": {
        "summary": {"kind": "train", "error": "config.yaml: learning_rate 0 is not positive", "reason": "BadConfig"},
        "exit": 64,
    }}}
    kube.apply(r.finetunejob("bad", namespace, "sft", DATA))

    status = kube.wait_phase("finetunejobs", namespace, "bad", "Failed", timeout=30)

    failed = {c["type"]: c for c in status["conditions"]}["Failed"]
    assert failed["reason"] == "BadConfig"
    assert "exit code 64" in failed["message"] and "learning_rate 0 is not positive" in failed["message"]
    assert status["message"] == failed["message"]
    # podFailurePolicy FailJob: no retry for a permanent error.
    assert len(kube.pods(namespace, "bad-train")) == 1
    assert "BadConfig" in [e["reason"] for e in kube.events(namespace, "bad") if e["type"] == "Warning"]
    # kstatus says Stalled (Flux reports the health check failed); Argo CD shows it Degraded.
    stalled = kube.kubectl("wait", "--for=condition=Stalled", "--timeout=10s", "-n", namespace, "finetunejob/bad",
                           check=False)
    assert stalled.returncode == 0, stalled.stderr
    degraded = health(kube.get("finetunejobs", namespace, "bad"))
    assert degraded["status"] == "Degraded" and degraded["message"].startswith("BadConfig: ")


def test_transient_errors_retry_up_to_the_backoff_limit(kube, namespace, fake_pods, operator):
    setup(kube, namespace)
    fake_pods.behaviours = {"train": {"*": {
        "summary": {"kind": "train", "error": "CUDA driver hiccup", "reason": "InternalError"}, "exit": 1,
    }}}
    kube.apply(r.finetunejob("flaky", namespace, "sft", DATA, backoffLimit=1))

    status = kube.wait_phase("finetunejobs", namespace, "flaky", "Failed", timeout=30)

    failed = {c["type"]: c for c in status["conditions"]}["Failed"]
    assert failed["reason"] == "InternalError"
    assert "gave up after 2 failed pod(s) (backoffLimit 1)" in failed["message"]
    assert status["restarts"] == 2
    assert len(kube.pods(namespace, "flaky-train")) == 2


def test_the_api_server_refuses_an_invalid_spec_naming_the_field(crds, kube, namespace):
    document = r.finetunejob("invalid", namespace, "sft", DATA, hyperparameters={"learningRate": -1})

    with pytest.raises(ApiRefused) as refused:
        kube.apply(document)

    assert refused.value.status == 422
    assert "spec.hyperparameters.learningRate" in refused.value.message
    assert kube.get("finetunejobs", namespace, "invalid") is None
