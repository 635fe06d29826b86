"""End to end: the chained example (dataset → SFT → DPO → eval) on the emulated cluster, run by the
real operator, with every pod running the real `kubetune-trainer` on the CPU against S3 (moto):
a tiny model and the shared sample data, two optimizer steps per training."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import boto3
import pytest

pytestmark = pytest.mark.slow

SAMPLES = {"sft": "defects/sft_chat.jsonl", "preference": "trl/preference.jsonl"}


@pytest.fixture
def operator_env(s3_bucket):
    return {"KUBETUNE_ARTIFACT_ROOT": f"s3://{s3_bucket}/kubetune"}


@pytest.fixture
def kubelet(cluster, namespace, tmp_path):
    # The trainer's console scripts sit beside this interpreter, as they do on the image's PATH.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    started = cluster.start_kubelet(namespace, tmp_path / "pods", extra_env={"PATH": path})
    yield started
    cluster.stop_kubelet(started)


def storage(moto_server: str) -> dict:
    return {"secretName": "s3-credentials", "endpointUrl": moto_server}


def documents(namespace: str, bucket: str, moto_server: str) -> list[dict]:
    model = f"s3://{bucket}/models/tiny"
    small = {"gpusPerNode": 0, "cpu": "1", "memory": "2Gi"}
    hyper = {"maxSteps": 2, "batchSize": 1, "gradientAccumulationSteps": 1, "cutoffLength": 256,
             "learningRate": 5.0e-3, "lrScheduler": "constant"}
    lora = {"type": "lora", "lora": {"r": 4, "alpha": 8}}

    def resource(kind: str, name: str, spec: dict) -> dict:
        return {"apiVersion": "kubetune.dev/v1alpha1", "kind": kind, "metadata": {"name": name, "namespace": namespace},
                "spec": spec | {"storage": storage(moto_server)}}

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
    cluster, namespace, s3_bucket, s3_env, moto_server, tiny_model_dir, sample_data, kubelet, operator
):
    from kubetune_trainer import storage as s3

    s3.upload_dir(tiny_model_dir, f"s3://{s3_bucket}/models/tiny")
    for sample in SAMPLES.values():
        s3.write_bytes(f"s3://{s3_bucket}/data/{sample}", (sample_data / sample).read_bytes())
    cluster.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3-credentials", "namespace": namespace},
                   "stringData": {"AWS_ACCESS_KEY_ID": s3_env["AWS_ACCESS_KEY_ID"],
                                  "AWS_SECRET_ACCESS_KEY": s3_env["AWS_SECRET_ACCESS_KEY"],
                                  "AWS_DEFAULT_REGION": s3_env["AWS_DEFAULT_REGION"]}})
    for document in documents(namespace, s3_bucket, moto_server):
        cluster.apply(document)

    resources = [("preferencedatasets", "sft-data"), ("preferencedatasets", "dpo-data"), ("finetunejobs", "sft"),
                 ("finetunejobs", "dpo"), ("evalruns", "chain-eval")]

    def finished():
        statuses = {name: cluster.status(plural, namespace, name) for plural, name in resources}
        phases = {status.get("phase") for status in statuses.values()}
        return statuses if "Failed" in phases or phases == {"Succeeded"} else None

    statuses = cluster.wait_for(finished, 400, "every resource Succeeded (or one Failed)", interval=0.5)
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
    assert len(cluster.jobs(namespace)) == 5
