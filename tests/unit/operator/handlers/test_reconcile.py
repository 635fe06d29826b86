"""Reconciles against an in-memory API: what gets created, in which order, and what the status says."""

from __future__ import annotations

import asyncio
import copy
import json
import time
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

import kubetune_operator.handlers  # noqa: F401  (registers the kinds)
from kubetune_operator.builders.settings import OperatorSettings
from kubetune_operator.handlers.reconcile import reconcile
from kubetune_operator.observability.metrics import OperatorMetrics
from kubetune_operator.runtime.context import Runtime
from kubetune_operator.runtime.kube import ApiError
from kubetune_operator.runtime.settings import RuntimeSettings
from kubetune_operator.runtime.status import merge_patch

NS = "team"
FINGERPRINT = "sha256:" + "f" * 64


class FakeApi:
    """Objects by (plural, namespace, name); merge patches; 409 on a second create."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.created: list[tuple[str, str]] = []
        self.status_patches = 0

    async def get(self, resource, namespace, name):
        if resource.plural == "secrets":
            raise ApiError(403, "GET", name, "the operator's RBAC does not include reading Secrets")
        return copy.deepcopy(self.objects.get((resource.plural, namespace, name)))

    async def list(self, resource, namespace, label_selector=None):
        return [copy.deepcopy(o) for (plural, ns, _), o in self.objects.items()
                if plural == resource.plural and ns == namespace
                and all(o["metadata"].get("labels", {}).get(k) == v for k, v in (label_selector or {}).items())]

    async def create(self, resource, namespace, body, fetch_existing=True):
        key = (resource.plural, namespace, body["metadata"]["name"])
        if key in self.objects:
            return (await self.get(resource, namespace, key[2]) if fetch_existing else None), False
        self.objects[key] = copy.deepcopy(body) | {"metadata": {**body["metadata"], "namespace": namespace, "uid": "u"}}
        self.created.append((body["kind"], body["metadata"]["name"]))
        return copy.deepcopy(self.objects[key]), True

    async def patch(self, resource, namespace, name, patch, subresource=None):
        key = (resource.plural, namespace, name)
        if key not in self.objects:
            raise ApiError(404, "PATCH", name, "not found")
        self.status_patches += subresource == "status"
        self.objects[key] = apply(self.objects[key], patch)
        return copy.deepcopy(self.objects[key])

    def put(self, plural: str, body: dict) -> None:
        self.objects[(plural, NS, body["metadata"]["name"])] = body

    def status(self, plural: str, name: str) -> dict:
        return self.objects[(plural, NS, name)].get("status") or {}

    def events(self) -> list[str]:
        return [o["reason"] for (plural, _, _), o in self.objects.items() if plural == "events"]


def apply(document: dict, patch: dict) -> dict:
    result = copy.deepcopy(document)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = apply(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


def runtime(api: FakeApi) -> Runtime:
    return Runtime(api=api, operator_settings=OperatorSettings(artifact_root="s3://art/root", progress_base_url="http://op:8080"),
                   settings=RuntimeSettings(progress_key=b"k" * 16), metrics=OperatorMetrics(CollectorRegistry()))


@pytest.fixture
def rt(api) -> Runtime:
    return runtime(api)


def resource(kind: str, name: str, spec: dict, status: dict | None = None) -> dict:
    body = {"apiVersion": "kubetune.dev/v1alpha1", "kind": kind,
            "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "generation": 1}, "spec": spec}
    if status is not None:
        body["status"] = status
    return body


def ftj_spec(**extra) -> dict:
    return {"method": "sft", "baseModel": "s3://models/base", "dataset": {"preferenceDataset": "data"},
            "resources": {"gpusPerNode": 0}, **extra}


def succeeded(**fields) -> dict:
    return {"phase": "Succeeded", **fields}


def run(rt, plural, name):
    asyncio.run(reconcile(rt, plural, NS, name))


def test_a_job_waits_for_a_dataset_that_does_not_exist(rt, api):
    api.put("finetunejobs", resource("FineTuneJob", "sft", ftj_spec()))
    run(rt, "finetunejobs", "sft")
    status = api.status("finetunejobs", "sft")
    assert status["phase"] == "Waiting"
    ready = status["conditions"][0]
    assert (ready["type"], ready["status"], ready["reason"]) == ("DatasetReady", "False", "DatasetNotFound")
    assert {kind for kind, _ in api.created} == {"Event"}
    assert sorted(api.events()) == ["DatasetNotFound", "Waiting"]


def test_a_job_whose_dataset_failed_is_stalled_until_the_dataset_is_fixed(rt, api):
    api.put("preferencedatasets", resource("PreferenceDataset", "data", {"kind": "sft"},
                                           {"phase": "Failed", "message": "BadData: line 3"}))
    api.put("finetunejobs", resource("FineTuneJob", "sft", ftj_spec()))
    run(rt, "finetunejobs", "sft")
    status = api.status("finetunejobs", "sft")
    conditions = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert status["phase"] == "Waiting"
    assert (conditions["Ready"], conditions["Reconciling"], conditions["Stalled"]) == (
        ("False", "DatasetFailed"), ("False", "DatasetFailed"), ("True", "DatasetFailed"))

    api.put("preferencedatasets", resource("PreferenceDataset", "data", {"kind": "sft"}, {"phase": "Running"}))
    run(rt, "finetunejobs", "sft")
    conditions = {c["type"]: c["status"] for c in api.status("finetunejobs", "sft")["conditions"]}
    assert (conditions["Reconciling"], conditions["Stalled"]) == ("True", "False")


def test_a_ready_dataset_starts_the_children_in_order_with_its_fingerprint(rt, api):
    api.put("preferencedatasets", resource("PreferenceDataset", "data", {"kind": "sft"}, succeeded(
        fingerprint=FINGERPRINT, artifacts={"uri": "s3://art/root/team/preferencedatasets/data"})))
    api.put("finetunejobs", resource("FineTuneJob", "sft", ftj_spec()))
    run(rt, "finetunejobs", "sft")
    children = [kind for kind, _ in api.created if kind != "Event"]
    assert children == ["Secret", "ConfigMap", "Service", "Job"]
    status = api.status("finetunejobs", "sft")
    assert (status["phase"], status["datasetFingerprint"]) == ("Pending", FINGERPRINT)
    config = yaml.safe_load(api.objects[("configmaps", NS, "sft-train-config")]["data"]["config.yaml"])
    assert (config["dataset"], config["dataset_fingerprint"]) == ("s3://art/root/team/preferencedatasets/data", FINGERPRINT)

    patches = api.status_patches
    run(rt, "finetunejobs", "sft")
    assert api.status_patches == patches, "an unchanged world writes nothing"


def test_children_that_exist_already_are_taken_as_they_are(rt, api):
    # Left by an operator that crashed before creating the Job; the Secret cannot even be read.
    api.put("configmaps", {"kind": "ConfigMap", "metadata": {"name": "sft-train-config", "namespace": NS}, "data": {}})
    api.put("secrets", {"kind": "Secret", "metadata": {"name": "sft-progress-uid-sft", "namespace": NS}, "data": {}})
    api.put("finetunejobs", resource("FineTuneJob", "sft", ftj_spec(dataset={"uri": "s3://data/prepared"})))
    run(rt, "finetunejobs", "sft")
    assert ("ConfigMap", "sft-train-config") not in api.created and ("Job", "sft-train") in api.created
    assert api.status("finetunejobs", "sft")["phase"] == "Pending"


def test_a_deleted_job_fails_the_resource_instead_of_starting_over(rt, api):
    created = {"phase": "Running", "conditions": [{"type": "JobCreated", "status": "True", "reason": "JobCreated"}]}
    api.put("finetunejobs", resource("FineTuneJob", "sft", ftj_spec(dataset={"uri": "s3://data/prepared"}), created))
    run(rt, "finetunejobs", "sft")
    status = api.status("finetunejobs", "sft")
    assert (status["phase"], status["conditions"][-1]["reason"]) == ("Failed", "JobDeleted")
    assert [kind for kind, _ in api.created if kind != "Event"] == []


def train_job(owner_uid: str, **status) -> dict:
    return {"kind": "Job", "metadata": {"name": "sft-train", "namespace": NS, "ownerReferences": [
        {"kind": "FineTuneJob", "name": "sft", "uid": owner_uid, "controller": True}]},
        "spec": {"completions": 1}, "status": status}


def test_a_job_created_just_before_a_crash_is_recorded_so_it_is_never_made_twice(rt, api):
    # The operator created the Job and died before it wrote JobCreated into the status.
    api.put("jobs", train_job("uid-sft"))
    api.put("finetunejobs", resource("FineTuneJob", "sft", ftj_spec(dataset={"uri": "s3://data/prepared"})))
    run(rt, "finetunejobs", "sft")
    assert {c["type"]: c["status"] for c in api.status("finetunejobs", "sft")["conditions"]}["JobCreated"] == "True"

    del api.objects[("jobs", NS, "sft-train")]
    run(rt, "finetunejobs", "sft")
    assert api.status("finetunejobs", "sft")["phase"] == "Failed"
    assert ("jobs", NS, "sft-train") not in api.objects


def test_a_deleted_namesakes_children_are_neither_adopted_nor_reused(rt, api):
    # `kubectl delete` then `apply` again: the old resource's children wait for garbage collection.
    api.put("jobs", train_job("uid-old", conditions=[{"type": "Complete", "status": "True"}]))
    stale = {"name": "sft-train-config", "namespace": NS, "ownerReferences": [{"uid": "uid-old", "controller": True}]}
    api.put("configmaps", {"kind": "ConfigMap", "metadata": stale, "data": {"config.yaml": "old"}})
    api.put("finetunejobs", resource("FineTuneJob", "sft", ftj_spec(dataset={"uri": "s3://data/prepared"})))
    run(rt, "finetunejobs", "sft")
    status = api.status("finetunejobs", "sft")
    assert status["phase"] == "Pending" and "Job sft-train" in status["message"]
    assert "Succeeded" not in {c["type"] for c in status.get("conditions", [])}

    del api.objects[("jobs", NS, "sft-train")]
    run(rt, "finetunejobs", "sft")
    status = api.status("finetunejobs", "sft")
    assert status["phase"] == "Pending" and "ConfigMap sft-train-config" in status["message"]
    assert ("jobs", NS, "sft-train") not in api.objects

    del api.objects[("configmaps", NS, "sft-train-config")]
    run(rt, "finetunejobs", "sft")
    assert api.objects[("jobs", NS, "sft-train")]["metadata"]["ownerReferences"][0]["uid"] == "uid-sft"
    assert "old" not in api.objects[("configmaps", NS, "sft-train-config")]["data"]["config.yaml"]


def test_a_start_point_that_wrote_a_full_model_fails_the_chain(rt, api):
    api.put("finetunejobs", resource("FineTuneJob", "sft", ftj_spec(peft={"type": "full"}),
                                     succeeded(artifacts={"uri": "s3://a/sft/final", "type": "full"})))
    api.put("finetunejobs", resource("FineTuneJob", "dpo", ftj_spec(method="dpo", dataset={"uri": "s3://data/p"},
                                                                      startFrom={"fineTuneJob": "sft"})))
    run(rt, "finetunejobs", "dpo")
    status = api.status("finetunejobs", "dpo")
    assert status["phase"] == "Failed"
    assert {c["type"]: c["reason"] for c in status["conditions"]}["Failed"] == "StartPointNotAdapter"


def test_finished_resources_are_left_alone(rt, api):
    # Finished under an operator that wrote no kstatus conditions: they are added once, nothing else.
    api.put("finetunejobs", resource("FineTuneJob", "sft", ftj_spec(), succeeded(observedGeneration=1)))
    run(rt, "finetunejobs", "sft")
    assert {c["type"]: c["status"] for c in api.status("finetunejobs", "sft")["conditions"]} == {
        "Ready": "True", "Reconciling": "False", "Stalled": "False"}
    run(rt, "finetunejobs", "sft")
    assert api.created == [] and api.status_patches == 1


def test_a_spec_this_operator_refuses_fails_an_unfinished_resource_only(rt, api):
    # E.g. a newer operator whose API dropped a value that finished resources still carry.
    api.put("finetunejobs", resource("FineTuneJob", "old", ftj_spec(method="ppo"), succeeded(observedGeneration=1)))
    api.put("finetunejobs", resource("FineTuneJob", "new", ftj_spec(method="ppo")))
    run(rt, "finetunejobs", "old")
    run(rt, "finetunejobs", "new")
    assert api.status("finetunejobs", "old")["phase"] == "Succeeded"
    new = api.status("finetunejobs", "new")
    assert new["phase"] == "Failed" and "spec.method" in new["message"]


def test_spec_suspend_suspends_the_job(rt, api):
    api.put("finetunejobs", resource("FineTuneJob", "sft", ftj_spec(dataset={"uri": "s3://data/p"}, suspend=True)))
    run(rt, "finetunejobs", "sft")
    api.objects[("jobs", NS, "sft-train")]["spec"]["suspend"] = False
    run(rt, "finetunejobs", "sft")
    assert api.objects[("jobs", NS, "sft-train")]["spec"]["suspend"] is True
    assert api.status("finetunejobs", "sft")["phase"] == "Suspended"


def test_a_suspended_training_drops_its_progress_series_so_no_stall_alert_fires(rt, api):
    api.put("finetunejobs", resource("FineTuneJob", "sft", ftj_spec(dataset={"uri": "s3://data/p"})))
    run(rt, "finetunejobs", "sft")
    rt.metrics.record_progress(NS, "sft")
    api.put("finetunejobs", resource("FineTuneJob", "sft", ftj_spec(dataset={"uri": "s3://data/p"}, suspend=True)))
    run(rt, "finetunejobs", "sft")
    assert api.status("finetunejobs", "sft")["phase"] == "Suspended"
    assert [s for m in rt.metrics.training_last_progress.collect() for s in m.samples] == []


def test_whether_kueue_admits_a_job_follows_the_job_not_a_later_spec(rt, api):
    key = ("finetunejobs", NS, "sft")
    api.put("finetunejobs", resource("FineTuneJob", "sft", ftj_spec(dataset={"uri": "s3://data/p"})))
    run(rt, "finetunejobs", "sft")
    # queueName added after the Job exists: the Job has no Kueue label, so nobody but the operator resumes it.
    api.objects[key]["spec"] |= {"queueName": "gpu", "suspend": True}
    run(rt, "finetunejobs", "sft")
    assert api.objects[("jobs", NS, "sft-train")]["spec"]["suspend"] is True
    api.objects[key]["spec"]["suspend"] = False
    run(rt, "finetunejobs", "sft")
    assert api.objects[("jobs", NS, "sft-train")]["spec"]["suspend"] is False


# --- EvalRun -----------------------------------------------------------------------------------------


def eval_spec(**extra) -> dict:
    return {
        "testSet": {"uri": "s3://data/test.jsonl"},
        "candidates": [{"name": "base", "model": "s3://models/base", "baseline": True},
                       {"name": "new", "fineTuneJob": "sft", **extra.pop("candidate", {})}],
        "engine": {"type": "hf"},
        "metrics": [{"name": "exact_match", "type": "exact_match"}],
        "gates": [{"metric": "exact_match", "candidate": "new", "comparator": ">=", "threshold": 0.0}],
        **extra,
    }


def finish_job(api, job: str, code: int, summary: dict) -> None:
    api.objects[("jobs", NS, job)]["status"] = {"conditions": [
        {"type": "Complete" if code == 0 else "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}
    api.put("pods", {"kind": "Pod", "metadata": {"name": f"{job}-x", "namespace": NS,
                                                 "labels": {"batch.kubernetes.io/job-name": job}},
                     "status": {"phase": "Succeeded" if code == 0 else "Failed", "containerStatuses": [
                         {"state": {"terminated": {"exitCode": code, "message": json.dumps(summary)}}}]}})


def finished_eval(api, passed: bool, extra_gates: tuple[dict, ...] = (), tally: dict | None = None) -> None:
    summary = {"kind": "eval", "passed": passed, "report": "s3://r/report.html",
               "gates": [{"name": "g", "metric": "exact_match", "candidate": "new", "value": 0.5, "threshold": 0.0,
                          "comparator": ">=", "passed": passed}, *extra_gates],
               "metrics": {"base": {"exact_match": {"value": 0.1}}, "new": {"exact_match": {"value": 0.5}}}}
    if tally is not None:
        summary["gateTally"] = tally
    finish_job(api, "e-eval", 0, summary)


def adapter_job(api, **status) -> None:
    api.put("finetunejobs", resource("FineTuneJob", "sft", ftj_spec(), succeeded(
        artifacts={"uri": "s3://a/sft/final", "type": "adapter", "sha256": {"adapter_model.safetensors": "a" * 64}},
        trueBase={"baseModel": "s3://models/base"}, **status)))


def test_eval_waits_for_its_candidates(rt, api):
    api.put("evalruns", resource("EvalRun", "e", eval_spec()))
    run(rt, "evalruns", "e")
    status = api.status("evalruns", "e")
    assert status["phase"] == "Waiting"
    assert {c["type"]: c["reason"] for c in status["conditions"]}["CandidatesReady"] == "CandidateNotFound"


def test_a_merged_candidate_needs_a_merged_model(rt, api):
    adapter_job(api)
    api.put("evalruns", resource("EvalRun", "e", eval_spec(candidate={"useMerged": True})))
    run(rt, "evalruns", "e")
    assert {c["type"]: c["reason"] for c in api.status("evalruns", "e")["conditions"]}["Failed"] == "NoMergedModel"


def evaluated(rt, api, passed: bool, extra_gates: tuple[dict, ...] = (), tally: dict | None = None,
              **promotion_fields) -> dict:
    """An EvalRun with a promotion target whose eval Job finished with the gates `passed`."""
    adapter_job(api)
    promotion = {"repository": "https://git.example.com/x/y.git", "secretName": "git", "candidate": "new",
                 **promotion_fields}
    api.put("evalruns", resource("EvalRun", "e", eval_spec(promotion=promotion)))
    run(rt, "evalruns", "e")
    finished_eval(api, passed=passed, extra_gates=extra_gates, tally=tally)
    run(rt, "evalruns", "e")
    return api.status("evalruns", "e")


def test_failed_gates_finish_the_run_without_promotion(rt, api):
    status = evaluated(rt, api, passed=False)
    assert (status["phase"], status["gatesPassed"]) == ("Succeeded", "0/1")
    gates = {c["type"]: c for c in status["conditions"]}["GatesPassed"]
    assert (gates["status"], gates["reason"]) == ("False", "GatesFailed")
    assert ("jobs", NS, "e-promote") not in api.objects


def test_passed_gates_start_the_promote_job_with_the_record_from_statuses(rt, api):
    status = evaluated(rt, api, passed=True)
    assert status["phase"] == "Running"
    assert {c["type"]: c["reason"] for c in status["conditions"]}["Promoted"] == "Promoting"
    record = json.loads(api.objects[("configmaps", NS, "e-promote-record")]["data"]["record.json"])
    assert record["adapter"]["uri"] == "s3://a/sft/final" and record["evalRun"]["uid"] == "uid-e"


def test_a_gate_result_the_status_cannot_hold_blocks_promotion(rt, api):
    # A failed gate whose result does not fit the status schema must not vanish and let the rest promote.
    unreadable = {"name": "g2", "metric": "exact_match", "candidate": "new", "value": "high", "threshold": 0.0,
                  "comparator": ">=", "passed": False}
    status = evaluated(rt, api, passed=True, extra_gates=(unreadable,))
    assert (status["phase"], status["gatesPassed"]) == ("Succeeded", "1/2")
    gates = {c["type"]: c for c in status["conditions"]}["GatesPassed"]
    assert (gates["status"], gates["reason"]) == ("False", "GatesFailed")
    assert "1 gate result(s) not in status (see the report)" in gates["message"]
    assert ("jobs", NS, "e-promote") not in api.objects


def test_gate_results_left_out_of_a_full_termination_message_still_count(rt, api):
    # The pod listed one of 40 results (the message holds 4 KiB); its tally says 39 passed.
    status = evaluated(rt, api, passed=True, tally={"passed": 39, "total": 40})
    assert (status["phase"], status["gatesPassed"]) == ("Succeeded", "39/40")
    gates = {c["type"]: c for c in status["conditions"]}["GatesPassed"]
    assert (gates["status"], gates["reason"]) == ("False", "GatesFailed")
    assert "failed: 1 gate result(s) not in status (see the report)" in gates["message"]
    assert ("jobs", NS, "e-promote") not in api.objects


def test_a_tally_of_all_passed_promotes_with_the_results_that_fit(rt, api):
    status = evaluated(rt, api, passed=True, tally={"passed": 40, "total": 40})
    assert (status["phase"], status["gatesPassed"], len(status["gates"])) == ("Running", "40/40", 1)
    assert ("jobs", NS, "e-promote") in api.objects


def test_a_tally_cannot_outvote_a_listed_failure(rt, api):
    status = evaluated(rt, api, passed=False, tally={"passed": 40, "total": 40})
    assert status["gatesPassed"] == "39/40"
    assert ("jobs", NS, "e-promote") not in api.objects


def test_a_long_gate_name_is_clipped_rather_than_dropped(rt, api):
    long_name = {"name": "new: " + "Δrepetition.no_eos_rate (CI bound) " * 5, "metric": "exact_match",
                 "candidate": "new", "value": 0.5, "threshold": 0.0, "comparator": ">=", "passed": True}
    status = evaluated(rt, api, passed=True, extra_gates=(long_name,))
    assert status["gatesPassed"] == "2/2" and len(status["gates"][1]["name"]) == 128
    assert ("jobs", NS, "e-promote") in api.objects


def test_a_failed_promote_job_fails_the_run_and_says_why(rt, api):
    evaluated(rt, api, passed=True)
    finish_job(api, "e-promote", 1, {"kind": "promotion", "error": "push rejected: protected branch"})
    run(rt, "evalruns", "e")
    status = api.status("evalruns", "e")
    conditions = {c["type"]: c for c in status["conditions"]}
    assert status["phase"] == "Failed" and conditions["Failed"]["reason"] == "PromotionFailed"
    assert conditions["Promoted"]["status"] == "False" and "protected branch" in conditions["Promoted"]["message"]
    assert conditions["GatesPassed"]["status"] == "True"


def test_a_promotion_by_pull_request_says_which_request_to_merge(rt, api):
    evaluated(rt, api, passed=True, pullRequest={"provider": "gitlab"})
    argv = api.objects[("jobs", NS, "e-promote")]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert argv[argv.index("--pull-request") + 1] == "gitlab" and "--api-url" not in argv
    head = "kubetune/promote-new-uid-e"
    finish_job(api, "e-promote", 0, {
        "kind": "promotion", "repository": "https://git.example.com/x/y.git", "branch": head, "path": "adapters",
        "commit": "c" * 40, "created": True, "baseBranch": "main",
        "pullRequest": {"number": 4, "url": "https://git.example.com/x/y/-/merge_requests/4", "state": "open",
                        "created": True}})
    run(rt, "evalruns", "e")
    status = api.status("evalruns", "e")
    assert status["phase"] == "Succeeded"
    assert status["promotion"] == {"repository": "https://git.example.com/x/y.git", "branch": head, "path": "adapters",
                                   "commit": "c" * 40, "baseBranch": "main",
                                   "pullRequest": "https://git.example.com/x/y/-/merge_requests/4"}
    promoted = {c["type"]: c for c in status["conditions"]}["Promoted"]
    assert (promoted["status"], promoted["reason"]) == ("True", "PullRequestOpened")
    assert "pull request #4 into main (open)" in promoted["message"] and "merge it" in promoted["message"]


def test_a_finished_training_drops_its_progress_timestamp(rt, api):
    rt.metrics.record_progress(NS, "sft")
    api.put("finetunejobs", resource("FineTuneJob", "sft", ftj_spec(dataset={"uri": "s3://data/prepared"})))
    run(rt, "finetunejobs", "sft")
    finish_job(api, "sft-train", 0, {"kind": "train", "artifact": {"uri": "s3://a/final", "type": "adapter"}})
    run(rt, "finetunejobs", "sft")
    assert api.status("finetunejobs", "sft")["phase"] == "Succeeded"
    assert [s for m in rt.metrics.training_last_progress.collect() for s in m.samples] == []


def test_an_evalruns_results_are_exported_until_a_while_after_it_ended(rt, api):
    from kubetune_operator.observability.metrics import FINISHED_SERIES_SECONDS

    def exported() -> list:
        return [s for m in rt.metrics.eval_gates_failed.collect() for s in m.samples]

    evaluated(rt, api, passed=False)
    assert api.status("evalruns", "e")["phase"] == "Succeeded" and len(exported()) == 1
    rt.metrics.drop_ended(now=time.time() + FINISHED_SERIES_SECONDS + 1)
    assert exported() == []
    # A restarted operator publishes them again while they are due, and not long after the end.
    run(rt, "evalruns", "e")
    assert len(exported()) == 1
    rt.metrics.forget_eval(NS, "e")
    api.objects[("evalruns", NS, "e")]["status"]["completionTime"] = "2020-01-01T00:00:00Z"
    run(rt, "evalruns", "e")
    assert exported() == []


def test_a_promotion_of_a_model_uri_is_refused_before_the_evaluation_runs(rt, api):
    promotion = {"repository": "https://git.example.com/x/y.git", "secretName": "git", "candidate": "new"}
    spec = eval_spec(promotion=promotion)
    spec["candidates"][1] = {"name": "new", "model": "s3://models/new"}
    api.put("evalruns", resource("EvalRun", "e", spec))
    run(rt, "evalruns", "e")
    status = api.status("evalruns", "e")
    assert status["phase"] == "Failed" and "not a FineTuneJob" in status["message"]
    assert {c["type"]: c["reason"] for c in status["conditions"]}["Failed"] == "PromotionRefused"
    assert ("jobs", NS, "e-eval") not in api.objects


def test_merge_patch_removes_what_is_gone():
    assert merge_patch({"a": 1, "b": {"c": 1, "d": 2}}, {"b": {"c": 1}, "e": [1]}) == {"a": None, "b": {"d": None},
                                                                                       "e": [1]}


def test_deleting_a_resource_keeps_the_series_of_other_kinds_with_the_same_name(rt):
    from kubetune_operator.handlers.reconcile import handle_event

    def series() -> set[str]:
        return {s.name for metric in rt.metrics.training_last_progress.collect() + rt.metrics.eval_metric.collect()
                for s in metric.samples}

    rt.metrics.record_progress(NS, "x")
    rt.metrics.record_eval(NS, "x", {"new": {"exact_match": {"value": 0.5}}}, 0)
    for plural, kind in [("preferencedatasets", "PreferenceDataset"), ("finetunejobs", "FineTuneJob")]:
        deleted = {"type": "DELETED", "object": resource(kind, "x", {})}
        asyncio.run(handle_event(rt, plural, deleted, []))
        if plural == "preferencedatasets":
            assert series() == {"kubetune_training_last_progress_timestamp_seconds", "kubetune_eval_metric"}
    assert series() == {"kubetune_eval_metric"}
    asyncio.run(handle_event(rt, "evalruns", {"type": "DELETED", "object": resource("EvalRun", "x", {})}, []))
    assert series() == set()


def test_a_dataset_prepared_with_warnings_says_so_in_its_status_and_message(rt, api):
    api.put("preferencedatasets", resource("PreferenceDataset", "data",
                                           {"kind": "preference", "sources": [{"uri": "s3://inputs/rows.jsonl"}]}))
    run(rt, "preferencedatasets", "data")
    warnings = ["subtype 'a' has no row in train: each of its prompts also occurs in a stratum that needed it",
                "subtype 'b' has no row in train: each of its prompts also occurs in a stratum that needed it"]
    finish_job(api, "data-data", 0, {"kind": "dataset", "fingerprint": FINGERPRINT, "counts": {"train": 4, "test": 2},
                                     "warnings": warnings})
    run(rt, "preferencedatasets", "data")
    status = api.status("preferencedatasets", "data")
    assert (status["phase"], status["warnings"]) == ("Succeeded", warnings)
    assert status["message"] == f"data preparation finished, with warnings: {warnings[0]} (and 1 more in status.warnings)"
