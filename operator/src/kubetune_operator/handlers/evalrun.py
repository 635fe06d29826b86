"""EvalRun → (after its test set and candidates have succeeded) the eval Job; results and gates into
status; with passing gates and a promotion target, the promote Job and the Promoted condition."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from kubetune_operator.api import EvalRun, FineTuneJob, PreferenceDataset
from kubetune_operator.api.evalrun import STATUS_GATES_LIMIT, CandidateResult, GateResult, PromotionStatus
from kubetune_operator.api.finetunejob import Lora
from kubetune_operator.builders import evaluation, promotion
from kubetune_operator.builders.inputs import InputRefused
from kubetune_operator.builders.workload import output_uri
from kubetune_operator.handlers.children import ensure_job, job_pods
from kubetune_operator.handlers.dependencies import Inputs, dependency, wait
from kubetune_operator.handlers.job_outcome import JobOutcome, apply_outcome, conform, job_outcome
from kubetune_operator.handlers.kind import Kind
from kubetune_operator.handlers.watch import register
from kubetune_operator.observability.metrics import FINISHED_SERIES_SECONDS, OperatorMetrics
from kubetune_operator.promotion.errors import PromotionRefused
from kubetune_operator.promotion.record import build_record
from kubetune_operator.runtime.context import Runtime
from kubetune_operator.runtime.kube import CUSTOM_RESOURCES
from kubetune_operator.runtime.status import StatusDraft, clip

GATE_NAME_LIMIT = GateResult.model_fields["name"].metadata[0].max_length


async def reconcile(rt: Runtime, evr: EvalRun, body: dict[str, Any], draft: StatusDraft) -> None:
    namespace = body["metadata"]["namespace"]
    if draft.was_terminal:
        # A restarted operator publishes the results again while they are due (a while after the end).
        publish_metrics(rt, evr, draft.current)
        return

    async def children() -> list[dict[str, Any]] | None:
        refusal = promotion_refusal(evr)
        if refusal is not None:
            # Known before the evaluation spends its GPU hours.
            draft.fail("PromotionRefused", refusal)
            return None
        inputs = await eval_inputs(rt, evr, namespace, draft)
        return None if inputs is None else evaluation.build(evr, rt.operator_settings, inputs)

    job = await ensure_job(rt, evr, draft, evaluation.job_name(evr), children)
    if job is None:
        return
    outcome = job_outcome(job, await job_pods(rt, job), "evaluation")
    if outcome.state != "Succeeded":
        apply_outcome(draft, outcome)
        return
    if not draft.current.get("results"):
        draft.set(**eval_status(evr, outcome.summary or {}, output_uri(evr, rt.operator_settings)))
        publish_metrics(rt, evr, draft.next)
    gates = draft.next.get("gates") or []
    passed_count, reported = gate_tally(draft.next)
    passed = reported > 0 and passed_count == reported
    tally = draft.next.get("gatesPassed") or "0/0"
    if not evr.spec.gates:
        draft.condition("GatesPassed", True, "NoGates", "no gates defined")
    elif passed:
        draft.condition("GatesPassed", True, "GatesPassed", f"{tally} gates passed")
    else:
        failing = [g["name"] for g in gates if not g.get("passed")]
        if reported - passed_count > len(failing):
            failing.append(f"{reported - passed_count - len(failing)} gate result(s) not in status (see the report)")
        draft.condition("GatesPassed", False, "GatesFailed",
                        f"{tally} gates passed; failed: {', '.join(failing) or 'no results'}")
    if evr.spec.promotion is None or not passed:
        apply_outcome(draft, outcome)
        return
    await promote(rt, evr, body, draft)


async def eval_inputs(rt: Runtime, evr: EvalRun, namespace: str, draft: StatusDraft) -> evaluation.EvalInputs | None:
    """The test set and candidates from other resources' statuses; None (and Waiting) until all are
    ready, or (and Failed) when one can never serve."""
    spec = evr.spec
    inputs = Inputs()
    if spec.test_set.preference_dataset:
        data = await inputs.check(rt, PreferenceDataset, namespace, spec.test_set.preference_dataset, "TestSet")
        draft.condition("TestSetReady", data.ready, data.reason, data.message)
    waiting = []
    for candidate in spec.candidates:
        if candidate.fine_tune_job:
            job = await inputs.check(rt, FineTuneJob, namespace, candidate.fine_tune_job, "Candidate")
            if not job.ready:
                waiting.append(job)
    try:
        resolved = evaluation.resolve_inputs(evr, inputs.artifacts_of)
    except InputRefused as refused:
        draft.fail(refused.reason, refused.message)
        return None
    if waiting:
        draft.condition("CandidatesReady", False, waiting[0].reason, "; ".join(w.message for w in waiting))
    else:
        draft.condition("CandidatesReady", True, "CandidatesReady", f"{len(spec.candidates)} candidates ready")
    if inputs.blocking:
        wait(draft, inputs.blocking)
        return None
    return resolved


def eval_status(evr: EvalRun, summary: dict[str, Any], default_output: str) -> dict[str, Any]:
    """Results, gates and report from an eval summary (contracts §5); misshapen parts are left out."""
    output = str(summary.get("output") or default_output).rstrip("/")
    baseline = {c.name: c.baseline for c in evr.spec.candidates}
    scores = summary.get("metrics") if isinstance(summary.get("metrics"), dict) else {}
    results = [
        result
        for candidate, metrics in scores.items()
        if (result := conform(
            CandidateResult,
            {"candidate": candidate, "baseline": baseline.get(candidate, False), "metrics": metrics},
            f"results of {candidate}",
        )) is not None
    ]
    raw_gates = summary.get("gates") if isinstance(summary.get("gates"), list) else []
    # A result that does not fit the schema is left out of `gates` but counted as failed, so it can
    # never let the others promote.
    gates = [gate for raw in raw_gates if (gate := conform(GateResult, _clip_name(raw), "gate")) is not None]
    listed_passing = sum(1 for g in gates if g["passed"])
    passed, total = listed_passing, len(raw_gates)
    tally = summary.get("gateTally") if isinstance(summary.get("gateTally"), dict) else {}
    tally_passed, tally_total = _count(tally.get("passed")), _count(tally.get("total"))
    if tally_passed is not None and tally_total is not None:
        # The pod leaves gate results out of a summary that would outgrow the termination message;
        # its tally still counts them, and no listed failure can be outvoted by it.
        total = max(tally_total, len(raw_gates))
        passed = min(tally_passed, total - (len(raw_gates) - listed_passing))
    fields = {
        "results": results or None,
        "gates": gates[:STATUS_GATES_LIMIT],
        "gatesPassed": f"{passed}/{total}",
        "report": summary.get("report") if isinstance(summary.get("report"), str) else f"{output}/report.html",
        "artifacts": output,
    }
    return {key: value for key, value in fields.items() if value is not None}


def _clip_name(gate: Any) -> Any:
    """Generated gate names ("<candidate>: Δ<metric> (CI bound) >= x") can outgrow the status bound."""
    if isinstance(gate, dict) and isinstance(gate.get("name"), str):
        return gate | {"name": clip(gate["name"], GATE_NAME_LIMIT)}
    return gate


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def gate_tally(status: dict[str, Any]) -> tuple[int, int]:
    """Passed and reported gate results, from `gatesPassed` ("passed/total")."""
    passed, _, total = str(status.get("gatesPassed") or "").partition("/")
    if passed.isdigit() and total.isdigit():
        return int(passed), int(total)
    return 0, len(status.get("gates") or [])


def publish_metrics(rt: Runtime, evr: EvalRun, status: dict[str, Any]) -> None:
    """The results as series, from when they arrive until a while after the EvalRun ends (a promotion
    may still run when they arrive: their end is set when it finishes)."""
    results = status.get("results")
    if not results:
        return
    ended = _timestamp(status.get("completionTime"))
    if ended is not None and ended + FINISHED_SERIES_SECONDS <= time.time():
        return
    metrics = {r["candidate"]: r.get("metrics") or {} for r in results}
    failed = sum(1 for g in status.get("gates") or [] if not g.get("passed"))
    rt.metrics.record_eval(evr.metadata.namespace or "default", evr.metadata.name, metrics, failed, ended)


def _timestamp(rfc3339: Any) -> float | None:
    try:
        return datetime.strptime(str(rfc3339), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def promoted_candidate(evr: EvalRun):
    wanted = evr.spec.promotion.candidate
    others = [c for c in evr.spec.candidates if not c.baseline]
    return next((c for c in others if c.name == wanted), None) if wanted else others[0]


def promotion_refusal(evr: EvalRun) -> str | None:
    """Why the spec's promotion can never happen, or None."""
    if evr.spec.promotion is None:
        return None
    candidate = promoted_candidate(evr)
    if candidate is None or not candidate.fine_tune_job:
        return (f"candidate {evr.spec.promotion.candidate or '(the non-baseline one)'} is not a FineTuneJob: only a "
                "FineTuneJob's adapter, with its recorded sha256 and true base, can be promoted")
    return None


async def promote(rt: Runtime, evr: EvalRun, body: dict[str, Any], draft: StatusDraft) -> None:
    async def children() -> list[dict[str, Any]] | None:
        try:
            record = await promotion_record(rt, evr, body, draft.next)
        except PromotionRefused as exc:
            draft.condition("Promoted", False, "PromotionRefused", str(exc))
            draft.fail("PromotionRefused", str(exc))
            return None
        return promotion.build(evr, rt.operator_settings, record)

    job = await ensure_job(rt, evr, draft, promotion.job_name(evr), children, marker="PromoteJobCreated")
    if job is None:
        return
    outcome = job_outcome(job, await job_pods(rt, job), "promotion")
    if outcome.state == "Succeeded":
        summary = outcome.summary or {}
        pull = summary.get("pullRequest") if isinstance(summary.get("pullRequest"), dict) else None
        landed = {k: summary.get(k) for k in ("repository", "branch", "path", "commit", "baseBranch")}
        record = conform(PromotionStatus, landed | {"pullRequest": (pull or {}).get("url")}, "promotion")
        draft.set(promotion=record)
        committed = f"committed {summary.get('commit') or '(unknown commit)'} to {summary.get('repository')} " \
                    f"{summary.get('branch')}"
        if pull is None:
            draft.condition("Promoted", True, "Promoted", committed)
        else:
            # The commit serves once a reviewer merges the request; the operator does not watch the forge.
            state = pull.get("state")
            draft.condition("Promoted", True, "PullRequestMerged" if state == "merged" else "PullRequestOpened",
                            f"{committed}; pull request #{pull.get('number')} into {summary.get('baseBranch')} "
                            f"({state}): {pull.get('url')}" + ("" if state == "merged" else "; merge it to serve the adapter"))
        apply_outcome(draft, JobOutcome("Succeeded", "Completed", "evaluation and promotion finished"))
    elif outcome.state == "Failed":
        draft.condition("Promoted", False, outcome.reason, outcome.message)
        draft.fail("PromotionFailed", outcome.message)
    else:
        draft.condition("Promoted", None, "Promoting", outcome.message)
        draft.set_phase("Running", "gates passed; " + outcome.message)


async def promotion_record(rt: Runtime, evr: EvalRun, body: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    """The record from what statuses hold: this EvalRun's results and the candidate's artifacts."""
    refusal = promotion_refusal(evr)
    if refusal is not None:
        raise PromotionRefused(refusal)
    candidate = promoted_candidate(evr)
    namespace = body["metadata"]["namespace"]
    source = await dependency(rt, FineTuneJob, namespace, candidate.fine_tune_job, "Candidate")
    if not source.ready:
        raise PromotionRefused(f"candidate {candidate.name}: {source.message}")
    ftj_body = await rt.api.get(CUSTOM_RESOURCES[FineTuneJob.plural], namespace, candidate.fine_tune_job)
    peft = ((ftj_body or {}).get("spec") or {}).get("peft") or {}
    rank = (peft.get("lora") or {}).get("r", Lora().r) if peft.get("type", "lora") != "full" else None
    summary = {
        "passed": True,
        "gates": status.get("gates") or [],
        "metrics": {r["candidate"]: r.get("metrics") or {} for r in status.get("results") or []},
        "report": status.get("report"),
    }
    return build_record(
        adapter_name=evr.spec.promotion.serving_name or candidate.name,
        candidate=candidate.name,
        eval_run={"namespace": namespace, "name": evr.metadata.name, "uid": body["metadata"].get("uid", "")},
        eval_summary=summary,
        adapter=source.status.get("artifacts") or {},
        true_base=source.status.get("trueBase") or {},
        fine_tune_job={"namespace": namespace, "name": candidate.fine_tune_job},
        lora_rank=rank,
    )


# Eval results are known only once an EvalRun finishes: they stay until it is deleted.
register(Kind(EvalRun, reconcile, forget_all=OperatorMetrics.forget_eval, end_finished=OperatorMetrics.end_eval_now))
