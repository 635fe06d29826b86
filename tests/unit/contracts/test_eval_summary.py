"""The eval pod's termination summary, as the operator reads it (contracts §5)."""

import json

import pytest

from kubetune_operator.api import EvalRun
from kubetune_operator.handlers.evalrun import eval_status
from kubetune_trainer.eval.runner import termination_summary
from kubetune_trainer.progress import write_termination_summary

CANDIDATES = [f"candidate-{i}" for i in range(12)]


def evalrun() -> EvalRun:
    candidates = [{"name": "base", "model": "s3://models/base", "baseline": True}]
    candidates += [{"name": name, "model": f"s3://models/{name}"} for name in CANDIDATES]
    return EvalRun.model_validate({"metadata": {"name": "e", "namespace": "n"},
                                   "spec": {"testSet": {"uri": "s3://data/t.jsonl"}, "candidates": candidates}})


def eval_summary(failing: set[str]) -> dict:
    gates = [
        {"name": f"{c}: Δrepetition.no_eos_rate (CI bound) <= {t}", "metric": "repetition.no_eos_rate",
         "candidate": c, "value": 0.0123456789, "threshold": t, "comparator": "<=", "passed": c not in failing}
        for c in CANDIDATES for t in (0.0, 0.05)
    ]
    estimate = {"value": 0.5, "ciLow": 0.4, "ciHigh": 0.6}
    return {"output": "s3://b/e", "report": "s3://b/e/report.html", "passed": not failing, "gates": gates,
            "metrics": {"exact_match": {c: estimate for c in ["base", *CANDIDATES]}}}


@pytest.mark.parametrize(("failing", "expected"), [(set(), "24/24"), ({"candidate-11"}, "22/24")])
def test_every_gate_result_counts_although_not_all_fit(tmp_path, failing, expected):
    written = write_termination_summary(termination_summary(eval_summary(failing)), str(tmp_path / "log"))
    message = json.loads(written)
    assert len(message["gates"]) < 24  # the case this is about: they did not all fit
    status = eval_status(evalrun(), message, "s3://default")
    assert status["gatesPassed"] == expected
    assert {g["name"] for g in status["gates"] if not g["passed"]} == {
        f"{c}: Δrepetition.no_eos_rate (CI bound) <= {t}" for c in failing for t in (0.0, 0.05)
    }
