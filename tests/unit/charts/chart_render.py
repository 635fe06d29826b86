"""Rendering charts/kubetune through helm-python-sdk (Helm's own Go code): defaults and each switch."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "charts" / "kubetune"
RELEASE = "kubetune"
NAMESPACE = "kubetune-system"

# Each switch on its own, plus everything at once in namespaced mode.
VARIANTS: dict[str, dict] = {
    "defaults": {},
    "cluster-mode": {"watch": {"mode": "cluster"}, "artifacts": {"root": "s3://models/kubetune"}},
    "namespaced-mode": {"watch": {"mode": "namespaced", "namespaces": ["team-a", "team-b"]}},
    "service-monitor": {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}},
    "pod-monitor": {"metrics": {"podMonitor": {"enabled": True}}},
    "prometheus-rule": {"metrics": {"prometheusRule": {"enabled": True, "stallMinutes": 45}}},
    "dashboards": {"dashboards": {"enabled": True}},
    "kueue": {"kueue": {"enabled": True, "clusterQueue": "gpu-cluster", "namespaces": ["team-a"]}},
    "s3-secret": {"storage": {"secretName": "s3-credentials"}},
    "pod-defaults": {
        "storage": {"endpointUrl": "https://s3.internal:9000", "caBundle": {"configMapName": "internal-ca"}},
        "workloads": {
            "training": {"nodeSelector": {"pool": "gpu"}, "priorityClassName": "training",
                         "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "training",
                                          "effect": "NoSchedule"}],
                         "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                             "nodeSelectorTerms": [{"matchExpressions": [
                                 {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["H100"]}]}]}}}},
            "evaluation": {"nodeSelector": {"pool": "inference"}},
        },
    },
    "irsa": {
        "storage": {
            "workloadServiceAccount": {
                "create": True,
                "namespaces": ["team-a"],
                "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/kubetune"},
            }
        }
    },
    "everything-namespaced": {
        "watch": {"mode": "namespaced", "namespaces": ["team-a", "team-b"]},
        "artifacts": {"root": "s3://models/kubetune"},
        "storage": {"secretName": "s3-credentials", "workloadServiceAccount": {"create": True}},
        "progress": {"existingSecret": "my-progress-key"},
        "metrics": {
            "serviceMonitor": {"enabled": True},
            "podMonitor": {"enabled": True},
            "prometheusRule": {"enabled": True},
        },
        "dashboards": {"enabled": True, "namespace": "monitoring"},
        "kueue": {"enabled": True, "clusterQueue": "gpu-cluster"},
    },
}


def render_templates(chart, values: dict) -> dict[str, str]:
    return chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)


def manifests(rendered: dict[str, str]) -> list[dict]:
    """Every object the templates render (NOTES.txt is text, not a manifest)."""
    return [
        document
        for path, text in sorted(rendered.items())
        if not path.endswith("NOTES.txt")
        for document in yaml.safe_load_all(text)
        if document
    ]


def find(objects: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def only(objects: list[dict], kind: str, name: str | None = None) -> dict:
    found = find(objects, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]
