"""The chained pipeline (dataset → SFT → DPO → eval → promotion) through the real operator, the
real API server, Job controller and node agent, with fake containers that speak the trainer's contracts."""

from __future__ import annotations

import yaml
from harness import resources as r

from tests.unit.charts.argocd_health import health

PLURALS = {"PreferenceDataset": "preferencedatasets", "FineTuneJob": "finetunejobs", "EvalRun": "evalruns"}


def chain(namespace: str) -> list[dict]:
    return [
        r.dataset("sft-data", namespace, "sft"),
        r.finetunejob("sft", namespace, "sft", "sft-data"),
        r.dataset("dpo-data", namespace, "preference"),
        r.finetunejob("dpo", namespace, "dpo", "dpo-data", start_from="sft"),
        r.evalrun("chain-eval", namespace, test_set="sft-data", baseline="sft", candidate="dpo"),
    ]


def behave(fake_pods, namespace: str) -> None:
    sft_final = f"{r.output(namespace, 'finetunejobs', 'sft')}/final"
    fake_pods.behaviours = {
        "data": {name: {"summary": r.dataset_summary(namespace, name)} for name in ("sft-data", "dpo-data")},
        "train": {
            "sft": {"summary": r.train_summary(namespace, "sft"),
                    "progress": [{"phase": "train", "step": 1, "total_steps": 2, "percent": 50.0, "loss": 0.7}]},
            "dpo": {"summary": r.train_summary(namespace, "dpo", merged_from=sft_final)},
        },
        "eval": {"*": {"summary": r.eval_summary(namespace, "chain-eval")}},
        "promote": {"*": {"summary": r.promotion_summary()}},
    }


def test_chain_runs_in_dependency_order_and_fills_every_status(kube, namespace, fake_pods, operator):
    behave(fake_pods, namespace)
    for secret in r.secrets(namespace):
        kube.apply(secret)
    # Applied in reverse: everything waits for what it needs, whatever the order of arrival.
    for document in reversed(chain(namespace)):
        kube.apply(document)

    evalrun = kube.wait_phase("evalruns", namespace, "chain-eval", {"Succeeded", "Failed"}, timeout=60)
    assert evalrun["phase"] == "Succeeded", evalrun

    jobs = sorted(job["metadata"]["name"] for job in kube.jobs(namespace))
    assert jobs == ["chain-eval-eval", "chain-eval-promote", "dpo-data-data", "dpo-train", "sft-data-data", "sft-train"]

    data = kube.status("preferencedatasets", namespace, "sft-data")
    assert data["phase"] == "Succeeded"
    assert data["fingerprint"] == r.FINGERPRINT
    assert data["counts"] == {"train": 9, "test": 1}
    assert data["dropped"] == {"broken_json": 1}
    assert data["strata"]["repeat"] == {"train": 5, "test": 1}
    assert data["promptLength"]["p95"] == 20
    assert data["artifacts"]["manifest"] == f"{r.output(namespace, 'preferencedatasets', 'sft-data')}/manifest.json"

    sft = kube.status("finetunejobs", namespace, "sft")
    assert sft["artifacts"]["uri"] == f"{r.output(namespace, 'finetunejobs', 'sft')}/final"
    assert sft["artifacts"]["type"] == "adapter"
    assert sft["datasetFingerprint"] == r.FINGERPRINT
    assert sft["bestEvalLoss"] == 0.5
    assert sft["restarts"] == 0
    assert sft["progress"]["step"] == 1 and sft["progress"]["percent"] == 50.0
    assert {c["type"]: c["status"] for c in sft["conditions"]}.items() >= {
        "DatasetReady": "True", "JobCreated": "True", "Succeeded": "True"
    }.items()

    # The DPO job started from the SFT adapter, with the dataset's fingerprint pinned.
    config = yaml.safe_load(kube.get("configmaps", namespace, "dpo-train-config")["data"]["config.yaml"])
    assert config["start_from"] == sft["artifacts"]["uri"]
    assert config["dataset"] == r.output(namespace, "preferencedatasets", "dpo-data")
    assert config["dataset_fingerprint"] == r.FINGERPRINT
    dpo = kube.status("finetunejobs", namespace, "dpo")
    assert dpo["trueBase"]["mergedAdapters"][0]["uri"] == sft["artifacts"]["uri"]
    assert {c["type"]: c["reason"] for c in dpo["conditions"]}["StartPointReady"] == "StartPointReady"

    assert evalrun["gatesPassed"] == "1/1"
    assert {res["candidate"]: res["baseline"] for res in evalrun["results"]} == {"sft": True, "dpo": False}
    assert evalrun["report"].endswith("/evalruns/chain-eval/report.html")
    assert evalrun["promotion"]["commit"] == r.promotion_summary()["commit"]
    conditions = {c["type"]: c for c in evalrun["conditions"]}
    assert conditions["GatesPassed"]["status"] == "True"
    assert conditions["Promoted"]["status"] == "True"

    # The promote Job carries the record built from the statuses: the adapter with its true base.
    record = yaml.safe_load(kube.get("configmaps", namespace, "chain-eval-promote-record")["data"]["record.json"])
    assert record["adapter"]["uri"] == dpo["artifacts"]["uri"]
    assert record["adapter"]["trueBase"]["mergedAdapters"][0]["uri"] == sft["artifacts"]["uri"]
    assert record["evalRun"]["candidate"] == "dpo"

    # Applied before its dataset, the SFT job waited first; Events tell its story in order.
    reasons = [event["reason"] for event in kube.events(namespace, "sft")]
    assert reasons.index("Waiting") < reasons.index("DatasetReady") < reasons.index("Succeeded")
    assert "Succeeded" in [event["reason"] for event in kube.events(namespace, "chain-eval")]

    # kstatus: every resource says Ready, so `kubectl wait` (and Flux's health checks) end at once.
    waited = kube.kubectl("wait", "--for=condition=Ready", "--timeout=10s", "-n", namespace,
                          *(f"{kind.lower()}/{d['metadata']['name']}" for d in chain(namespace)
                            for kind in [d["kind"]]), check=False)
    assert waited.returncode == 0, waited.stderr
    # Argo CD's health check, run on the objects as the API server returns them.
    for document in chain(namespace):
        plural = PLURALS[document["kind"]]
        assert health(kube.get(plural, namespace, document["metadata"]["name"]))["status"] == "Healthy"
    # Conditions are a map keyed by type: another field manager's condition joins the operator's
    # under server-side apply instead of replacing the list.
    kube.kubectl_apply([{"apiVersion": "kubetune.dev/v1alpha1", "kind": "EvalRun",
                         "metadata": {"name": "chain-eval", "namespace": namespace},
                         "status": {"conditions": [{"type": "PolicyChecked", "status": "True", "reason": "Checked"}]}}],
                       "--server-side", "--subresource=status", "--field-manager=policy-bot")
    types = [c["type"] for c in kube.status("evalruns", namespace, "chain-eval")["conditions"]]
    assert {"Ready", "Reconciling", "Stalled", "GatesPassed", "Promoted", "PolicyChecked"} <= set(types)

    # The operator fixture holds every request against the chart's RBAC; it sees them all.
    made = {((e["objectRef"].get("apiGroup") or ""), "/".join(filter(None, [e["objectRef"]["resource"], e["objectRef"].get("subresource")])),
             e["verb"]) for e in operator.requests() if (e.get("objectRef") or {}).get("namespace") == namespace}
    assert {("", "secrets", "create"), ("batch", "jobs", "create"), ("kubetune.dev", "evalruns/status", "patch")} <= made
    assert not {verb for group, resource, verb in made if resource == "secrets"} - {"create"}
