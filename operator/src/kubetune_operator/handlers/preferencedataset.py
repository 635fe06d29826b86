"""PreferenceDataset → a Job running `kubetune-trainer data prepare`; status from its summary."""

from __future__ import annotations

from typing import Any

from kubetune_operator.api import PreferenceDataset
from kubetune_operator.api.preferencedataset import (
    STATUS_STRATA_LIMIT,
    STATUS_WARNING_LENGTH,
    STATUS_WARNINGS_LIMIT,
    PreferenceDatasetStatus,
    StratumCounts,
)
from kubetune_operator.builders import dataset
from kubetune_operator.builders.workload import output_uri
from kubetune_operator.handlers.children import ensure_job, job_pods
from kubetune_operator.handlers.job_outcome import apply_outcome, conform, job_outcome, status_fields
from kubetune_operator.handlers.kind import Kind
from kubetune_operator.handlers.watch import register
from kubetune_operator.runtime.context import Runtime
from kubetune_operator.runtime.status import StatusDraft, clip


async def reconcile(rt: Runtime, pds: PreferenceDataset, body: dict[str, Any], draft: StatusDraft) -> None:
    if draft.was_terminal:
        return

    async def children() -> list[dict[str, Any]]:
        return dataset.build(pds, rt.operator_settings)

    job = await ensure_job(rt, pds, draft, dataset.job_name(pds), children)
    if job is None:
        return
    outcome = job_outcome(job, await job_pods(rt, job), "data preparation")
    apply_outcome(draft, outcome)
    if outcome.state == "Succeeded":
        fields = dataset_status(outcome.summary or {}, output_uri(pds, rt.operator_settings))
        draft.set(**fields)
        if warnings := fields.get("warnings"):
            # Succeeded, but not quite as asked: said where `kubectl get -o yaml` and the Event show it.
            more = f" (and {len(warnings) - 1} more in status.warnings)" if len(warnings) > 1 else ""
            draft.set_phase("Succeeded", f"{outcome.message}, with warnings: {warnings[0]}{more}")


def dataset_status(summary: dict[str, Any], default_output: str) -> dict[str, Any]:
    """Status fields from a data-prepare summary (contracts §5), each held against
    PreferenceDatasetStatus; misshapen parts are left out. Strata and warnings are taken one by one
    (a bad one costs only itself), the strata and warnings past the status's bounds left out and
    long warnings clipped."""
    output = str(summary.get("output") or default_output).rstrip("/")
    lengths = summary.get("lengths") if isinstance(summary.get("lengths"), dict) else {}
    strata = summary.get("strata") if isinstance(summary.get("strata"), dict) else {}
    warnings = summary.get("warnings") if isinstance(summary.get("warnings"), list) else []
    return status_fields(PreferenceDatasetStatus, {
        "format": summary.get("format"),
        "formatEvidence": summary.get("formatEvidence"),
        "fingerprint": summary.get("fingerprint"),
        "counts": summary.get("counts"),
        "dropped": summary.get("dropped"),
        "strata": {
            str(stratum): counts
            for stratum, raw in list(strata.items())[:STATUS_STRATA_LIMIT]
            if (counts := conform(StratumCounts, raw, f"stratum {stratum}", strict=True)) is not None
        } or None,
        "warnings": [clip(w, STATUS_WARNING_LENGTH) for w in warnings if isinstance(w, str)][:STATUS_WARNINGS_LIMIT]
        or None,
        "promptLength": lengths.get("prompt"),
        "answerLength": lengths.get("answer"),
        "artifacts": {"uri": output, "manifest": f"{output}/manifest.json"},
    })


register(Kind(PreferenceDataset, reconcile))

