"""Resource documents and termination summaries for operator tests: the chained example's shape
(dataset → SFT → DPO → eval), small enough for fake containers."""

from __future__ import annotations

from typing import Any

ROOT = "s3://artifacts/kubetune"
FINGERPRINT = "sha256:" + "ab" * 32
SHA = "cd" * 32


def meta(name: str, namespace: str) -> dict[str, str]:
    return {"name": name, "namespace": namespace}


def dataset(name: str, namespace: str, kind: str = "sft") -> dict[str, Any]:
    return {
        "apiVersion": "kubetune.dev/v1alpha1",
        "kind": "PreferenceDataset",
        "metadata": meta(name, namespace),
        "spec": {"kind": kind, "format": "auto", "sources": [{"uri": "s3://data/input.jsonl"}],
                 "storage": {"secretName": "s3-credentials"}},
    }


def finetunejob(name: str, namespace: str, method: str, data: str, start_from: str | None = None,
                **spec: Any) -> dict[str, Any]:
    """`data` is a PreferenceDataset's name, or the URI of a prepared dataset."""
    body = {
        "method": method,
        "baseModel": "s3://models/tiny",
        "dataset": {"uri": data} if "://" in data else {"preferenceDataset": data},
        "resources": {"gpusPerNode": 0, "cpu": "1", "memory": "1Gi"},
        "storage": {"secretName": "s3-credentials"},
        **spec,
    }
    if start_from:
        body["startFrom"] = {"fineTuneJob": start_from}
    return {"apiVersion": "kubetune.dev/v1alpha1", "kind": "FineTuneJob", "metadata": meta(name, namespace), "spec": body}


def evalrun(name: str, namespace: str, test_set: str, baseline: str, candidate: str, promote: bool = True) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "testSet": {"preferenceDataset": test_set},
        "candidates": [
            {"name": "sft", "fineTuneJob": baseline, "baseline": True},
            {"name": "dpo", "fineTuneJob": candidate},
        ],
        "engine": {"type": "hf", "maxNewTokens": 8},
        "metrics": [{"name": "exact_match", "type": "exact_match"}],
        "gates": [{"metric": "exact_match", "candidate": "dpo", "comparator": ">=", "threshold": 0.0,
                   "relativeToBaseline": True}],
        "resources": {"cpu": "1", "memory": "1Gi"},
        "storage": {"secretName": "s3-credentials"},
    }
    if promote:
        spec["promotion"] = {"repository": "https://git.example.com/platform/serving.git", "path": "adapters",
                             "secretName": "gitops-token", "candidate": "dpo"}
    return {"apiVersion": "kubetune.dev/v1alpha1", "kind": "EvalRun", "metadata": meta(name, namespace), "spec": spec}


def secrets(namespace: str) -> list[dict[str, Any]]:
    return [
        {"apiVersion": "v1", "kind": "Secret", "metadata": meta("s3-credentials", namespace),
         "stringData": {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": meta("gitops-token", namespace),
         "stringData": {"token": "not-a-real-token"}},
    ]


def output(namespace: str, plural: str, name: str) -> str:
    return f"{ROOT}/{namespace}/{plural}/{name}"


def dataset_summary(namespace: str, name: str) -> dict[str, Any]:
    return {
        "kind": "dataset",
        "output": output(namespace, "preferencedatasets", name),
        "format": "trl",
        "formatEvidence": "first rows have prompt, chosen and rejected message lists",
        "fingerprint": FINGERPRINT,
        "counts": {"train": 9, "test": 1},
        "dropped": {"broken_json": 1},
        "strata": {"repeat": {"train": 5, "test": 1}, "other": {"train": 4, "test": 0}},
        "lengths": {"prompt": {"min": 3, "mean": 10.5, "p50": 9, "p95": 20, "max": 21},
                    "answer": {"min": 1, "mean": 4.0, "p50": 4, "p95": 7, "max": 8}},
    }


def train_summary(namespace: str, name: str, merged_from: str | None = None) -> dict[str, Any]:
    out = output(namespace, "finetunejobs", name)
    return {
        "kind": "train",
        "output": out,
        "artifact": {"uri": f"{out}/final", "type": "adapter", "sha256": {"adapter_model.safetensors": SHA}},
        "merged": None,
        "trueBase": {"baseModel": "s3://models/tiny",
                     "mergedAdapters": [{"uri": merged_from, "sha256": SHA}] if merged_from else []},
        "bestCheckpoint": f"{out}/checkpoints/checkpoint-000002",
        "bestEvalLoss": 0.5,
        "steps": 2,
        "finalLoss": 0.4,
        "resumedFrom": None,
    }


def eval_summary(namespace: str, name: str, passed: bool = True) -> dict[str, Any]:
    out = output(namespace, "evalruns", name)
    return {
        "kind": "eval",
        "output": out,
        "report": f"{out}/report.html",
        "passed": passed,
        "gates": [{"name": "exact_match_>=", "metric": "exact_match", "candidate": "dpo", "value": 0.1 if passed else -0.2,
                   "threshold": 0.0, "comparator": ">=", "passed": passed}],
        "metrics": {"sft": {"exact_match": {"value": 0.5, "ciLow": 0.3, "ciHigh": 0.7}},
                    "dpo": {"exact_match": {"value": 0.6, "ciLow": 0.4, "ciHigh": 0.8, "delta": 0.1}}},
    }


def promotion_summary() -> dict[str, Any]:
    return {"kind": "promotion", "repository": "https://git.example.com/platform/serving.git", "branch": "main",
            "path": "adapters/dpo", "commit": "0123456789abcdef0123456789abcdef01234567", "created": True}
