"""FineTuneJob → (after its dataset and start point have succeeded) the trainer ConfigMap, a headless
Service and an Indexed Job; status from the train summary and the progress channel."""

from __future__ import annotations

from typing import Any

from pydantic.alias_generators import to_camel

from kubetune_operator.api import FineTuneJob, PreferenceDataset
from kubetune_operator.api.finetunejob import FineTuneJobStatus
from kubetune_operator.builders import training
from kubetune_operator.builders.inputs import InputRefused
from kubetune_operator.builders.workload import output_uri
from kubetune_operator.handlers.children import ensure_job, job_pods, sync_suspend
from kubetune_operator.handlers.dependencies import Inputs, wait
from kubetune_operator.handlers.job_outcome import apply_outcome, job_outcome, status_fields
from kubetune_operator.handlers.kind import Kind
from kubetune_operator.handlers.watch import register
from kubetune_operator.observability.metrics import OperatorMetrics
from kubetune_operator.runtime.context import Runtime
from kubetune_operator.runtime.status import StatusDraft


async def reconcile(rt: Runtime, ftj: FineTuneJob, body: dict[str, Any], draft: StatusDraft) -> None:
    if draft.was_terminal:
        return

    async def children() -> list[dict[str, Any]] | None:
        inputs = await training_inputs(rt, ftj, body["metadata"]["namespace"], draft)
        if inputs is None:
            return None
        if inputs.dataset_fingerprint:
            draft.set(datasetFingerprint=inputs.dataset_fingerprint)
        return training.build(ftj, rt.operator_settings, inputs)

    job = await ensure_job(rt, ftj, draft, training.job_name(ftj), children)
    if job is None:
        return
    job = await sync_suspend(rt, job, ftj.spec.suspend)
    outcome = job_outcome(job, await job_pods(rt, job), "training")
    apply_outcome(draft, outcome)
    # Never less than before: replaced pods that were evicted are deleted, and no listing shows them again.
    draft.set(restarts=max(outcome.restarts, int(draft.current.get("restarts") or 0)))
    if outcome.state == "Succeeded":
        summary = outcome.summary or {}
        draft.set(**training_status(summary, output_uri(ftj, rt.operator_settings)))
        if isinstance(summary.get("resumedFrom"), str):
            draft.set_phase("Succeeded", f"training finished, resumed from {summary['resumedFrom']}")


async def training_inputs(
    rt: Runtime, ftj: FineTuneJob, namespace: str, draft: StatusDraft
) -> training.TrainingInputs | None:
    """The dataset and start point from other resources' statuses; None (and Waiting) until both are
    ready, or (and Failed) when one can never serve."""
    spec = ftj.spec
    inputs = Inputs()
    if spec.dataset.preference_dataset:
        data = await inputs.check(rt, PreferenceDataset, namespace, spec.dataset.preference_dataset, "Dataset")
        draft.condition("DatasetReady", data.ready, data.reason, data.message)
    else:
        draft.condition("DatasetReady", True, "DatasetUri", f"prepared dataset at {spec.dataset.uri}")
    if spec.start_from and spec.start_from.fine_tune_job:
        start = await inputs.check(rt, FineTuneJob, namespace, spec.start_from.fine_tune_job, "StartPoint")
        draft.condition("StartPointReady", start.ready, start.reason, start.message)
    elif spec.start_from:
        draft.condition("StartPointReady", True, "AdapterUri", f"starting from the adapter at {spec.start_from.adapter_uri}")
    try:
        resolved = training.resolve_inputs(ftj, inputs.artifacts_of)
    except InputRefused as refused:
        draft.fail(refused.reason, refused.message)
        return None
    if inputs.blocking:
        wait(draft, inputs.blocking)
        return None
    return resolved


def training_status(summary: dict[str, Any], default_output: str) -> dict[str, Any]:
    """Status fields from a train summary (contracts §5), each held against FineTuneJobStatus;
    misshapen parts are left out."""
    output = str(summary.get("output") or default_output).rstrip("/")
    artifact = summary.get("artifact") if isinstance(summary.get("artifact"), dict) else {}
    artifacts = {
        "uri": artifact.get("uri") or f"{output}/final",
        "type": artifact.get("type"),
        "mergedUri": summary.get("merged"),
        "manifest": f"{output}/manifest.json",
        "sha256": artifact.get("sha256"),
    }
    plots = summary.get("plots") if isinstance(summary.get("plots"), dict) else {}
    if plots:
        artifacts["plots"] = {to_camel(name): uri for name, uri in plots.items()}
    return status_fields(FineTuneJobStatus, {
        "artifacts": artifacts,
        "trueBase": summary.get("trueBase"),
        "bestCheckpoint": summary.get("bestCheckpoint"),
        "bestEvalLoss": summary.get("bestEvalLoss"),
        "tracking": summary.get("tracking") or None,
    })


# Training series describe a running job: gone once it finishes, is suspended or deleted.
register(Kind(FineTuneJob, reconcile, forget_running=OperatorMetrics.forget_training,
              forget_all=OperatorMetrics.forget_training))
