"""PreferenceDataset → a Job running `kubetune-trainer data prepare`; status from its summary."""

from __future__ import annotations

from typing import Any

from kubetune_operator.api import PreferenceDataset
from kubetune_operator.api.preferencedataset import (
    STATUS_WARNING_LENGTH,
    STATUS_WARNINGS_LIMIT,
    LengthStats,
    SplitCounts,
    StratumCounts,
)
from kubetune_operator.builders import dataset
from kubetune_operator.builders.workload import output_uri
from kubetune_operator.handlers.children import ensure_job, job_pods
from kubetune_operator.handlers.job_outcome import apply_outcome, conform, job_outcome
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
    """Status fields from a data-prepare summary (contracts §5); misshapen parts are left out."""
    output = str(summary.get("output") or default_output).rstrip("/")
    lengths = summary.get("lengths") if isinstance(summary.get("lengths"), dict) else {}
    strata = summary.get("strata") if isinstance(summary.get("strata"), dict) else {}
    dropped = summary.get("dropped")
    warnings = summary.get("warnings") if isinstance(summary.get("warnings"), list) else []
    fields = {
        "format": summary.get("format") if isinstance(summary.get("format"), str) else None,
        "formatEvidence": summary.get("formatEvidence") if isinstance(summary.get("formatEvidence"), str) else None,
        "fingerprint": summary.get("fingerprint") if isinstance(summary.get("fingerprint"), str) else None,
        "counts": conform(SplitCounts, summary.get("counts"), "counts"),
        "dropped": dropped if isinstance(dropped, dict) and all(
            isinstance(k, str) and isinstance(v, int) for k, v in dropped.items()
        ) else None,
        "strata": {
            str(stratum): counts
            for stratum, raw in list(strata.items())[:256]
            if (counts := conform(StratumCounts, raw, f"stratum {stratum}")) is not None
        } or None,
        "warnings": [clip(w, STATUS_WARNING_LENGTH) for w in warnings if isinstance(w, str)][:STATUS_WARNINGS_LIMIT]
        or None,
        "promptLength": conform(LengthStats, lengths.get("prompt"), "prompt lengths"),
        "answerLength": conform(LengthStats, lengths.get("answer"), "answer lengths"),
        "artifacts": {"uri": output, "manifest": f"{output}/manifest.json"},
    }
    return {key: value for key, value in fields.items() if value is not None}


register(Kind(PreferenceDataset, reconcile))

