"""Argo CD's health check (charts/kubetune/argocd/health.lua), run in Lua 5.1 on the objects the
operator's reconciles leave in an in-memory API server, one scenario per state a resource can be
in. tests/integration/operator runs it on objects from a real API server too."""

from __future__ import annotations

import copy

import pytest
import yaml

from kubetune_operator.api.crd import ARGOCD_PATCH
from tests.unit.charts.argocd_health import ROOT, SCRIPT, health
from tests.unit.operator.handlers.test_reconcile import (
    NS,
    FakeApi,
    adapter_job,
    evaluated,
    finish_job,
    ftj_spec,
    resource,
    run,
    runtime,
    succeeded,
)

DATA = {"uri": "s3://data/prepared"}


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


@pytest.fixture
def rt(api):
    return runtime(api)


def reconciled(rt, api, plural: str, name: str, body: dict) -> dict:
    api.put(plural, body)
    run(rt, plural, name)
    return copy.deepcopy(api.objects[(plural, NS, name)])


def training(rt, api, **spec) -> dict:
    return reconciled(rt, api, "finetunejobs", "sft", resource("FineTuneJob", "sft", ftj_spec(**spec)))


def job_status(api, **status) -> None:
    api.objects[("jobs", NS, "sft-train")]["status"] = status


def again(rt, api, plural="finetunejobs", name="sft") -> dict:
    run(rt, plural, name)
    return copy.deepcopy(api.objects[(plural, NS, name)])


def test_a_resource_the_operator_has_not_seen_is_progressing():
    body = resource("FineTuneJob", "sft", ftj_spec())
    assert health(body) == {"status": "Progressing", "message": "Waiting for the kubetune operator to reconcile it"}


def test_waiting_for_an_input_is_progressing_until_the_input_fails(rt, api):
    waiting = training(rt, api)
    assert health(waiting)["status"] == "Progressing" and "does not exist" in health(waiting)["message"]
    api.put("preferencedatasets", resource("PreferenceDataset", "data", {"kind": "sft"},
                                           {"phase": "Failed", "message": "BadData: line 3"}))
    stalled = again(rt, api)
    assert health(stalled)["status"] == "Degraded" and "BadData: line 3" in health(stalled)["message"]


def test_a_job_goes_from_progressing_to_healthy(rt, api):
    pending = training(rt, api, dataset=DATA)
    assert health(pending)["status"] == "Progressing"
    job_status(api, active=1, ready=1)
    running = again(rt, api)
    assert running["status"]["phase"] == "Running" and health(running)["status"] == "Progressing"
    finish_job(api, "sft-train", 0, {"kind": "train", "artifact": {"uri": "s3://a/final", "type": "adapter"}})
    done = again(rt, api)
    assert health(done) == {"status": "Healthy", "message": "training finished"}


def test_a_failed_job_is_degraded_with_its_reason(rt, api):
    training(rt, api, dataset=DATA)
    finish_job(api, "sft-train", 68, {"kind": "train", "error": "CUDA out of memory", "reason": "OutOfMemory"})
    failed = health(again(rt, api))
    assert failed["status"] == "Degraded" and failed["message"].startswith("OutOfMemory: training failed")


def test_suspended_and_queued_jobs_are_suspended(rt, api):
    assert health(training(rt, api, dataset=DATA, suspend=True))["status"] == "Suspended"
    api.objects.clear()
    queued = health(training(rt, api, dataset=DATA, queueName="gpu"))
    assert queued["status"] == "Suspended" and "Kueue" in queued["message"]


def test_a_spec_change_not_yet_reconciled_is_progressing(rt, api):
    running = training(rt, api, dataset=DATA, suspend=True)
    running["metadata"]["generation"] = 2
    assert health(running) == {"status": "Progressing",
                               "message": "The operator has not yet reconciled generation 2"}


def test_an_evalrun_is_healthy_whether_its_gates_failed_or_it_promoted(rt, api):
    rejected = evaluated(rt, api, passed=False)
    body = copy.deepcopy(api.objects[("evalruns", NS, "e")])
    assert rejected["phase"] == "Succeeded"
    assert health(body) == {"status": "Healthy", "message": "Finished; gates 0/1 passed, so nothing was promoted: "
                            + {c["type"]: c for c in rejected["conditions"]}["GatesPassed"]["message"]}

    api.objects.clear()
    evaluated(rt, api, passed=True)
    assert health(copy.deepcopy(api.objects[("evalruns", NS, "e")]))["status"] == "Progressing"  # promoting
    finish_job(api, "e-promote", 0, {"kind": "promotion", "repository": "https://git.example.com/x/y.git",
                                     "branch": "main", "path": "adapters", "commit": "c" * 40, "created": True})
    promoted = health(again(rt, api, "evalruns", "e"))
    assert promoted["status"] == "Healthy" and f"committed {'c' * 40}" in promoted["message"]


def test_a_prepared_dataset_is_healthy(rt, api):
    adapter_job(api)
    api.put("preferencedatasets", resource("PreferenceDataset", "data", {"kind": "sft"}, succeeded(message="prepared")))
    assert health(copy.deepcopy(api.objects[("preferencedatasets", NS, "data")]))["status"] == "Healthy"


def test_the_argocd_patch_carries_the_script_for_every_kind():
    data = yaml.safe_load((ROOT / ARGOCD_PATCH).read_text())["data"]
    assert set(data) == {f"resource.customizations.health.kubetune.dev_{kind}"
                         for kind in ("PreferenceDataset", "FineTuneJob", "EvalRun")}
    assert set(data.values()) == {SCRIPT.read_text()}
