"""End to end: the chained example (dataset → SFT → DPO → eval) on the real control plane, run by
the chart's operator, with every pod running the real `kubetune-trainer` on the CPU against S3
(moto): a tiny model and the shared sample data, two optimizer steps per training."""

from __future__ import annotations

import json

import boto3
import pytest

pytestmark = pytest.mark.slow

SAMPLES = {"sft": "defects/sft_chat.jsonl", "preference": "trl/preference.jsonl"}


def storage(moto_server: str) -> dict:
    return {"secretName": "s3-credentials", "endpointUrl": moto_server}


def documents(namespace: str, bucket: str, moto_server: str) -> list[dict]:
    model = f"s3://{bucket}/models/tiny"
    small = {"gpusPerNode": 0, "cpu": "1", "memory": "2Gi"}
    hyper = {"maxSteps": 2, "batchSize": 1, "gradientAccumulationSteps": 1, "cutoffLength": 256,
             "learningRate": 5.0e-3, "lrScheduler": "constant"}
    lora = {"type": "lora", "lora": {"r": 4, "alpha": 8}}

    def resource(kind: str, name: str, spec: dict) -> dict:
        # Outputs in this test's bucket, laid out as under an artifact root (the operator's is shared).
        output = {"uri": f"s3://{bucket}/kubetune/{namespace}/{kind.lower()}s/{name}"}
        return {"apiVersion": "kubetune.dev/v1alpha1", "kind": kind, "metadata": {"name": name, "namespace": namespace},
                "spec": spec | {"storage": storage(moto_server), "output": output | spec.get("output", {})}}

    return [
        resource("PreferenceDataset", "sft-data", {
            "kind": "sft", "format": "chat-sft", "sources": [{"uri": f"s3://{bucket}/data/{SAMPLES['sft']}"}],
            "split": {"testFraction": 0.25, "stratifyBy": "subtype"},
        }),
        resource("PreferenceDataset", "dpo-data", {
            "kind": "preference", "format": "trl", "sources": [{"uri": f"s3://{bucket}/data/{SAMPLES['preference']}"}],
            "split": {"testFraction": 0.2},
        }),
        resource("FineTuneJob", "sft", {
            "method": "sft", "baseModel": model, "dataset": {"preferenceDataset": "sft-data"}, "peft": lora,
            "hyperparameters": hyper, "resources": small, "checkpointing": {"everySteps": 1, "keep": 1},
        }),
        resource("FineTuneJob", "dpo", {
            "method": "dpo", "baseModel": model, "startFrom": {"fineTuneJob": "sft"},
            "dataset": {"preferenceDataset": "dpo-data"}, "peft": lora, "hyperparameters": hyper,
            "resources": small, "checkpointing": {"everySteps": 1, "keep": 1},
        }),
        resource("EvalRun", "chain-eval", {
            "testSet": {"preferenceDataset": "sft-data", "maxSamples": 4},
            "candidates": [{"name": "sft", "fineTuneJob": "sft", "baseline": True},
                           {"name": "dpo", "fineTuneJob": "dpo"}],
            "engine": {"type": "hf", "maxNewTokens": 8, "batchSize": 4},
            "metrics": [{"name": "exact_match", "type": "exact_match"}, {"name": "repetition", "type": "repetition"}],
            "bootstrap": {"samples": 100},
            "gates": [{"metric": "exact_match", "candidate": "dpo", "comparator": ">=", "threshold": -1.0,
                       "relativeToBaseline": True}],
            "resources": {"cpu": "1", "memory": "2Gi"},
        }),
    ]


def keys(bucket: str, prefix: str) -> set[str]:
    listing = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix)
    return {item["Key"][len(prefix):] for item in listing.get("Contents", [])}


def test_the_chained_example_runs_to_the_end_with_artifacts_in_s3(
    kube, namespace, s3_bucket, s3_env, moto_server, tiny_model_dir, sample_data, operator
):
    from kubetune_trainer import storage as s3

    s3.upload_dir(tiny_model_dir, f"s3://{s3_bucket}/models/tiny")
    for sample in SAMPLES.values():
        s3.write_bytes(f"s3://{s3_bucket}/data/{sample}", (sample_data / sample).read_bytes())
    kube.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3-credentials", "namespace": namespace},
                   "stringData": {"AWS_ACCESS_KEY_ID": s3_env["AWS_ACCESS_KEY_ID"],
                                  "AWS_SECRET_ACCESS_KEY": s3_env["AWS_SECRET_ACCESS_KEY"],
                                  "AWS_DEFAULT_REGION": s3_env["AWS_DEFAULT_REGION"]}})
    for document in documents(namespace, s3_bucket, moto_server):
        kube.apply(document)

    resources = [("preferencedatasets", "sft-data"), ("preferencedatasets", "dpo-data"), ("finetunejobs", "sft"),
                 ("finetunejobs", "dpo"), ("evalruns", "chain-eval")]

    def finished():
        statuses = {name: kube.status(plural, namespace, name) for plural, name in resources}
        phases = {status.get("phase") for status in statuses.values()}
        return statuses if "Failed" in phases or phases == {"Succeeded"} else None

    statuses = kube.wait_for(finished, 600, "every resource Succeeded (or one Failed)", interval=0.5)
    for name, status in statuses.items():
        assert status["phase"] == "Succeeded", json.dumps({name: status}, indent=1, ensure_ascii=False)[:6000]
    evalrun = statuses["chain-eval"]
    root = f"kubetune/{namespace}"
    assert statuses["sft-data"]["counts"]["test"] > 0 and statuses["sft-data"]["fingerprint"].startswith("sha256:")
    assert {"train.jsonl", "test.jsonl", "manifest.json"} <= keys(s3_bucket, f"{root}/preferencedatasets/sft-data/")
    for job in ("sft", "dpo"):
        written = keys(s3_bucket, f"{root}/finetunejobs/{job}/")
        assert {"manifest.json", "final/adapter_model.safetensors", "final/kubetune.json"} <= written, sorted(written)
        assert statuses[job]["artifacts"]["type"] == "adapter"
        assert statuses[job]["datasetFingerprint"] == statuses[f"{job}-data"]["fingerprint"]
    # The DPO adapter's true base is the base with the SFT adapter merged in.
    merged = statuses["dpo"]["trueBase"]["mergedAdapters"]
    assert [m["uri"] for m in merged] == [statuses["sft"]["artifacts"]["uri"]]
    assert evalrun["gatesPassed"] == "1/1"
    assert {r["candidate"] for r in evalrun["results"]} == {"sft", "dpo"}
    assert {"report.html", "manifest.json"} <= keys(s3_bucket, f"{root}/evalruns/chain-eval/")
    assert len(kube.jobs(namespace)) == 5
