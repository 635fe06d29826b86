"""EvalRun with passing gates → the short Job that commits the promotion record to Git.

The operator never reads Secrets, and the eval pod (which runs model code) holds no push
credentials: only this pod mounts the Git Secret (docs/promotion.md).
"""

from __future__ import annotations

import json
from typing import Any

from kubetune_operator.api import EvalRun
from kubetune_operator.api.resource import Scheduling, Storage
from kubetune_operator.builders import workload
from kubetune_operator.builders.settings import OperatorSettings

RECORD_DIR = f"{workload.CONFIG_DIR}/record"
CREDENTIALS_DIR = f"{workload.CONFIG_DIR}/git"


def job_name(evr: EvalRun) -> str:
    return f"{evr.metadata.name}-promote"


def config_map_name(evr: EvalRun) -> str:
    return f"{evr.metadata.name}-promote-record"


def command(evr: EvalRun) -> list[str]:
    promotion = evr.spec.promotion
    return [
        "kubetune",
        "promote",
        "--record",
        f"{RECORD_DIR}/record.json",
        "--repo",
        promotion.repository,
        "--branch",
        promotion.branch,
        "--path",
        promotion.path,
        "--author",
        promotion.author,
        "--credentials-dir",
        CREDENTIALS_DIR,
        *review_arguments(evr),
    ]


def review_arguments(evr: EvalRun) -> list[str]:
    """Promotion by pull request: the forge and, when given, its API root."""
    review = evr.spec.promotion.pull_request
    if review is None:
        return []
    return ["--pull-request", review.provider, *(["--api-url", review.api_url] if review.api_url else [])]


def build(evr: EvalRun, settings: OperatorSettings, record: dict[str, Any]) -> list[workload.Manifest]:
    promotion = evr.spec.promotion
    if promotion is None:
        raise ValueError(f"EvalRun {evr.metadata.name} has no promotion target")
    config = workload.config_map(
        evr,
        config_map_name(evr),
        "promote",
        {"record.json": json.dumps(record, indent=2, sort_keys=True, ensure_ascii=False)},
    )
    volumes, mounts = workload.scratch_volumes()
    volumes += [
        {"name": "record", "configMap": {"name": config_map_name(evr)}},
        {"name": "git-credentials", "secret": {"secretName": promotion.secret_name, "defaultMode": 0o400}},
    ]
    mounts += [
        {"name": "record", "mountPath": RECORD_DIR, "readOnly": True},
        {"name": "git-credentials", "mountPath": CREDENTIALS_DIR, "readOnly": True},
    ]
    env = [
        {"name": "HOME", "value": f"{workload.SCRATCH_DIR}/home"},
        {"name": "TMPDIR", "value": f"{workload.SCRATCH_DIR}/tmp"},
        {"name": "KUBETUNE_NAMESPACE", "value": workload.namespace_of(evr)},
        {"name": "KUBETUNE_NAME", "value": evr.metadata.name},
    ]
    container = workload.container(
        name="promote",
        image=settings.operator_image,
        command=command(evr),
        env=env,
        resources=workload.compute_resources("500m", "512Mi"),
        mounts=mounts,
    )
    # The promote pod needs neither the eval pod's GPU node selection nor its S3 identity.
    pod = workload.pod_spec([container], volumes, Scheduling(), Storage())
    return [config, workload.job(evr, job_name(evr), "promote", pod, backoff_limit=4, active_deadline_seconds=900)]
