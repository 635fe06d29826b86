"""A FineTuneJob whose dataset is missing or never succeeds waits, saying for what, and starts nothing."""

from __future__ import annotations

import re

from harness import resources as r


def reconciles(operator, kind: str) -> float:
    text = operator.metrics()
    match = re.search(rf'kubetune_operator_reconciles_total{{kind="{kind}",result="success"}} ([0-9.e+]+)', text)
    return float(match.group(1)) if match else 0.0


def test_a_dataset_that_never_becomes_ready_leaves_the_job_waiting(kube, namespace, fake_pods, operator):
    for secret in r.secrets(namespace):
        kube.apply(secret)
    kube.apply(r.finetunejob("sft", namespace, "sft", "defects"))

    status = kube.wait_phase("finetunejobs", namespace, "sft", "Waiting", timeout=15)
    ready = {c["type"]: c for c in status["conditions"]}["DatasetReady"]
    assert (ready["status"], ready["reason"]) == ("False", "DatasetNotFound")
    assert f"PreferenceDataset defects: it does not exist in {namespace}" in ready["message"]

    # The dataset appears and fails: the job is woken, and keeps waiting with the reason.
    fake_pods.behaviours = {"data": {"*": {
        "summary": {"kind": "dataset", "error": "input.jsonl line 3: not JSON", "reason": "BadData"}, "exit": 65,
    }}}
    kube.apply(r.dataset("defects", namespace))
    kube.wait_phase("preferencedatasets", namespace, "defects", "Failed", timeout=30)

    def waiting_on_failure():
        conditions = {c["type"]: c for c in kube.status("finetunejobs", namespace, "sft").get("conditions", [])}
        return conditions.get("DatasetReady", {}).get("reason") == "DatasetFailed" and conditions["DatasetReady"]

    ready = kube.wait_for(waiting_on_failure, 15, "DatasetReady=False/DatasetFailed")
    assert "input.jsonl line 3: not JSON" in ready["message"]

    # Periodic resyncs change nothing: still waiting, still no training Job.
    seen = reconciles(operator, "finetunejob")
    kube.wait_for(lambda: reconciles(operator, "finetunejob") >= seen + 2, 15, "two more reconciles")
    assert kube.status("finetunejobs", namespace, "sft")["phase"] == "Waiting"
    assert [j["metadata"]["name"] for j in kube.jobs(namespace)] == ["defects-data"]
