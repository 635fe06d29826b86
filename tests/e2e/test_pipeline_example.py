"""End to end: examples/pipeline (dataset → SFT → DPO → eval) applied with kubectl to the real
control plane and followed with `kubectl wait`, run by the chart's operator, every pod running the
real `kubetune-trainer` on the CPU against S3 (moto).

The example's own inputs are put where it reads them (the tiny model at its base model's URI, the
sample defect records and CValues pairs at its sources), and it is sized for a CPU, each change
listed in `for_this_machine`: its namespace, the S3 endpoint, CPU resources instead of 8 GPUs, two
optimizer steps, short sequences and generations, four test samples, and no promotion (its
GitOps repository is a placeholder; promotion runs against real git in tests/integration/promotion).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import boto3
import pytest
import yaml

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = sorted((ROOT / "examples" / "pipeline").glob("*.yaml"))
PLURALS = {"PreferenceDataset": "preferencedatasets", "FineTuneJob": "finetunejobs", "EvalRun": "evalruns"}
SHORT = {"PreferenceDataset": "pds", "FineTuneJob": "ftj", "EvalRun": "evr"}
ARTIFACTS = "artifacts"  # the bucket of the chart's artifacts.root in the tests (tests/cluster/testing.py)


def for_this_machine(document: dict, namespace: str, moto_server: str) -> dict:
    document = copy.deepcopy(document)
    document["metadata"]["namespace"] = namespace
    spec = document["spec"]
    spec["storage"] = spec.get("storage", {}) | {"endpointUrl": moto_server}
    if document["kind"] == "FineTuneJob":
        spec["resources"] = {"gpusPerNode": 0, "cpu": "1", "memory": "2Gi"}
        spec["hyperparameters"] = spec.get("hyperparameters", {}) | {"maxSteps": 2, "cutoffLength": 256}
        spec["checkpointing"] = {"everySteps": 1, "keep": 1}
    if document["kind"] == "EvalRun":
        spec["testSet"] |= {"maxSamples": 4}
        spec["engine"] |= {"maxNewTokens": 8, "batchSize": 4}
        spec["bootstrap"] = {"samples": 100}
        spec["resources"] = {"cpu": "1", "memory": "2Gi"}
        spec.pop("promotion", None)
    return document


def inputs(pipeline: list[dict]) -> tuple[str, list[str]]:
    """The base model's URI and the sources' URIs, as the example names them."""
    base = next(d["spec"]["baseModel"] for d in pipeline if d["kind"] == "FineTuneJob")
    sources = [s["uri"] for d in pipeline if d["kind"] == "PreferenceDataset" for s in d["spec"]["sources"]]
    return base, sources


def keys(bucket: str, prefix: str) -> set[str]:
    listing = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix)
    return {item["Key"][len(prefix):] for item in listing.get("Contents", [])}


def test_the_pipeline_example_runs_to_the_end_with_kubectl_wait(
    kube, namespace, s3_env, moto_server, tiny_model_dir, sample_data, operator
):
    from kubetune_trainer import storage as s3

    pipeline = [yaml.safe_load(path.read_text()) for path in PIPELINE]
    base, sources = inputs(pipeline)
    client = boto3.client("s3")
    for uri in [base, *sources, f"s3://{ARTIFACTS}/"]:
        bucket = uri.removeprefix("s3://").split("/", 1)[0]
        if bucket not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
            client.create_bucket(Bucket=bucket)
    s3.upload_dir(tiny_model_dir, base)
    for uri in sources:
        local = {"defects": sample_data / "defects" / "raw", "cvalues": sample_data / "cvalues" / "train.jsonl"}
        sample = next(path for name, path in local.items() if f"/{name}/" in uri)
        if sample.is_dir():
            s3.upload_dir(sample, uri)
        else:
            s3.write_bytes(uri, sample.read_bytes())
    kube.kubectl("create", "secret", "generic", "s3-credentials", "-n", namespace,
                 f"--from-literal=AWS_ACCESS_KEY_ID={s3_env['AWS_ACCESS_KEY_ID']}",
                 f"--from-literal=AWS_SECRET_ACCESS_KEY={s3_env['AWS_SECRET_ACCESS_KEY']}",
                 f"--from-literal=AWS_DEFAULT_REGION={s3_env['AWS_DEFAULT_REGION']}")

    kube.kubectl_apply([for_this_machine(d, namespace, moto_server) for d in pipeline])

    names = {d["metadata"]["name"]: d["kind"] for d in pipeline}
    for name, kind in names.items():
        waited = kube.kubectl("wait", f"{SHORT[kind]}/{name}", "-n", namespace, "--for=condition=Succeeded",
                              "--timeout=600s", check=False, timeout=660)
        status = kube.status(PLURALS[kind], namespace, name)
        assert waited.returncode == 0, json.dumps({name: status}, indent=1, ensure_ascii=False)[:6000]
        assert status["phase"] == "Succeeded"
    statuses = {name: kube.status(PLURALS[kind], namespace, name) for name, kind in names.items()}

    root = f"kubetune/{namespace}"
    data = statuses["defects-sft"]
    assert data["counts"]["test"] > 0 and data["fingerprint"].startswith("sha256:")
    assert {"train.jsonl", "test.jsonl", "manifest.json"} <= keys(ARTIFACTS, f"{root}/preferencedatasets/defects-sft/")
    sft, dpo = statuses["qwen25-1-5b-defects-sft"], statuses["qwen25-1-5b-safety-dpo"]
    for job, dataset in (("qwen25-1-5b-defects-sft", "defects-sft"), ("qwen25-1-5b-safety-dpo", "safety-prefs")):
        written = keys(ARTIFACTS, f"{root}/finetunejobs/{job}/")
        assert {"manifest.json", "final/adapter_model.safetensors", "final/kubetune.json"} <= written, sorted(written)
        assert statuses[job]["artifacts"]["type"] == "adapter"
        assert statuses[job]["datasetFingerprint"] == statuses[dataset]["fingerprint"]
    # The DPO adapter's true base is the base with the SFT adapter merged in; mergeAdapter wrote merged/.
    assert [m["uri"] for m in dpo["trueBase"]["mergedAdapters"]] == [sft["artifacts"]["uri"]]
    assert any(k.startswith("merged/") for k in keys(ARTIFACTS, f"{root}/finetunejobs/qwen25-1-5b-safety-dpo/"))
    evalrun = statuses["qwen25-1-5b-chain-eval"]
    assert {r["candidate"] for r in evalrun["results"]} == {"base", "sft", "dpo"}
    assert evalrun["gatesPassed"].endswith("/2")
    assert {"report.html", "manifest.json"} <= keys(ARTIFACTS, f"{root}/evalruns/qwen25-1-5b-chain-eval/")
    assert len(kube.jobs(namespace)) == 5
    # kubectl wait works on the other conditions the resources carry.
    kube.kubectl("wait", "ftj/qwen25-1-5b-safety-dpo", "-n", namespace, "--for=condition=StartPointReady")
    kube.kubectl("wait", "evr/qwen25-1-5b-chain-eval", "-n", namespace, "--for=condition=CandidatesReady")
