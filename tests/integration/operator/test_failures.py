"""Failures end in a readable status: bad config fails at once, other errors retry up to the
backoff limit, and the API server (emulated with the CRD rules) refuses invalid specs."""

from __future__ import annotations

import pytest
from harness import resources as r

from kubetune_operator.runtime.kube import ApiError

DATA = "s3://data/prepared/"


def setup(cluster, namespace):
    for secret in r.secrets(namespace):
        cluster.apply(secret)


def test_bad_config_fails_at_once_with_the_trainers_message(cluster, namespace, kubelet, fake_pods, operator):
    setup(cluster, namespace)
    fake_pods.behaviours = {"train": {"*": {
        "summary": {"kind": "train", "error": "config.yaml: learning_rate 0 is not positive", "reason": "BadConfig"},
        "exit": 64,
    }}}
    cluster.apply(r.finetunejob("bad", namespace, "sft", DATA))

    status = cluster.wait_phase("finetunejobs", namespace, "bad", "Failed", timeout=30)

    failed = {c["type"]: c for c in status["conditions"]}["Failed"]
    assert failed["reason"] == "BadConfig"
    assert "exit code 64" in failed["message"] and "learning_rate 0 is not positive" in failed["message"]
    assert status["message"] == failed["message"]
    # podFailurePolicy FailJob: no retry for a permanent error.
    assert len(cluster.pods(namespace, "bad-train")) == 1
    assert "BadConfig" in [e["reason"] for e in cluster.events(namespace, "bad") if e["type"] == "Warning"]


def test_transient_errors_retry_up_to_the_backoff_limit(cluster, namespace, kubelet, fake_pods, operator):
    setup(cluster, namespace)
    fake_pods.behaviours = {"train": {"*": {
        "summary": {"kind": "train", "error": "CUDA driver hiccup", "reason": "InternalError"}, "exit": 1,
    }}}
    cluster.apply(r.finetunejob("flaky", namespace, "sft", DATA, backoffLimit=1))

    status = cluster.wait_phase("finetunejobs", namespace, "flaky", "Failed", timeout=30)

    failed = {c["type"]: c for c in status["conditions"]}["Failed"]
    assert failed["reason"] == "InternalError"
    assert "gave up after 2 failed pod(s) (backoffLimit 1)" in failed["message"]
    assert status["restarts"] == 2
    assert len(cluster.pods(namespace, "flaky-train")) == 2


def test_the_api_server_refuses_an_invalid_spec_naming_the_field(cluster, namespace):
    document = r.finetunejob("invalid", namespace, "sft", DATA, hyperparameters={"learningRate": -1})

    with pytest.raises(ApiError) as refused:
        cluster.apply(document)

    assert refused.value.status == 422
    assert "spec.hyperparameters.learningRate" in refused.value.message
    assert cluster.get("finetunejobs", namespace, "invalid") is None
