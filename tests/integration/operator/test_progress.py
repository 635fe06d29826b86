"""The progress endpoint: only the resource's own token is accepted; events reach status.progress
and the training gauges; the operator writes the token into the resource's Secret."""

from __future__ import annotations

import base64
import json
import re
import urllib.error
import urllib.request

from harness import resources as r

from kubetune_operator.runtime.tokens import progress_token


def post(operator, path: str, body: bytes, token: str | None) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{operator.progress_port}{path}", data=body, method="POST",
        headers={"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {}),
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_progress_needs_the_resources_token_and_lands_in_status_and_metrics(kube, namespace, operator):
    created = kube.apply(r.finetunejob("sft", namespace, "sft", "not-there-yet"))
    kube.wait_phase("finetunejobs", namespace, "sft", "Waiting", timeout=15)
    token = progress_token(operator.progress_key(), created["metadata"]["uid"])
    path = f"/progress/{namespace}/finetunejobs/sft"
    event = json.dumps({"phase": "train", "step": 30, "total_steps": 120, "percent": 25.0, "loss": 0.61,
                        "reward_margin": 0.4, "tokens_per_second": 5120.0, "eta_seconds": 90.0,
                        "checkpoint": "s3://bucket/ckpt/checkpoint-000030"}).encode()

    assert post(operator, path, event, None) == 401
    assert post(operator, path, event, progress_token(operator.progress_key(), "another-uid")) == 401
    assert post(operator, f"/progress/{namespace}/finetunejobs/nobody", event, token) == 404
    assert post(operator, f"/progress/{namespace}/widgets/sft", event, token) == 404
    assert post(operator, path, b"{" + b" " * 70_000 + b"}", token) == 413
    assert post(operator, path, b"not json", token) == 400
    assert post(operator, path, event, token) == 202

    status = kube.wait_for(lambda: kube.status("finetunejobs", namespace, "sft").get("progress"), 10,
                              "status.progress")
    assert status["step"] == 30 and status["totalSteps"] == 120 and status["percent"] == 25.0
    assert status["loss"] == 0.61 and status["rewardMargin"] == 0.4 and status["updatedAt"]
    assert kube.status("finetunejobs", namespace, "sft")["lastCheckpoint"] == "s3://bucket/ckpt/checkpoint-000030"

    metrics = operator.metrics()
    # The operator stamps when progress came; what the pods measure (loss, tokens) their own series say.
    assert f'kubetune_training_last_progress_timestamp_seconds{{namespace="{namespace}",resource="sft"}}' in metrics
    assert "kubetune_training_loss" not in metrics
    # The operator is shared by the session: other tests' resources may wait too.
    assert re.search(r'kubetune_resources\{kind="finetunejob",phase="Waiting"\} [1-9]', metrics)
    assert 'kubetune_operator_reconciles_total{kind="finetunejob",result="success"}' in metrics
    assert 'kubetune_operator_reconcile_duration_seconds_count{kind="finetunejob"}' in metrics


def test_the_progress_secret_holds_the_resources_token(kube, namespace, operator):
    created = kube.apply(r.finetunejob("sft", namespace, "sft", "s3://data/prepared/"))
    kube.wait_phase("finetunejobs", namespace, "sft", "Pending", timeout=15)

    secret_name = f"sft-progress-{created['metadata']['uid']}"
    secret = kube.get("secrets", namespace, secret_name)
    token = base64.b64decode(secret["data"]["token"]).decode()
    assert token == progress_token(operator.progress_key(), created["metadata"]["uid"])
    env = {e["name"]: e for e in kube.get("jobs", namespace, "sft-train")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KUBETUNE_PROGRESS_URL"]["value"] == (
        f"http://kubetune.kubetune-system.svc:{operator.progress_port}/progress/{namespace}/finetunejobs/sft"
    )
    assert env["KUBETUNE_PROGRESS_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == secret_name
