"""One input resolver per kind, three lookups: the operator's statuses, `kubetune render`'s predicted
layout and `kubetune run`'s step summaries resolve the same chain to the same inputs, and refuse the
same unusable ones (a start point that is not an adapter, a merged model that is not written)."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from kubetune_operator.api import EvalRun, FineTuneJob, PreferenceDataset, Resource
from kubetune_operator.api.validation import validate
from kubetune_operator.builders import evaluation, graph, training, workload
from kubetune_operator.builders.settings import OperatorSettings
from kubetune_operator.cli.documents import load_documents
from kubetune_operator.errors import UserError, ValidationFailed
from kubetune_operator.handlers import evalrun, finetunejob, preferencedataset
from kubetune_operator.localrun.runner import LocalRunner, StepResult
from kubetune_operator.observability.metrics import OperatorMetrics
from kubetune_operator.runtime.context import Runtime
from kubetune_operator.runtime.settings import RuntimeSettings
from kubetune_operator.runtime.status import StatusDraft
from tests.unit.operator.handlers.test_reconcile import FakeApi

ROOT = Path(__file__).resolve().parents[4]
SETTINGS = OperatorSettings(artifact_root="s3://art/root")
SFT, DPO, EVAL = "qwen25-1-5b-defects-sft", "qwen25-1-5b-safety-dpo", "qwen25-1-5b-chain-eval"


def chain(edit: Callable[[dict[str, dict]], None] | None = None) -> list[Resource]:
    """examples/pipeline (dataset → SFT → DPO → eval), the eval also taking the DPO job's merged model."""
    bodies = {d.body["metadata"]["name"]: copy.deepcopy(d.body)
              for d in load_documents(sorted((ROOT / "examples" / "pipeline").glob("*.yaml")))}
    bodies[EVAL]["spec"]["candidates"].append({"name": "dpo-merged", "fineTuneJob": DPO, "useMerged": True})
    if edit:
        edit(bodies)
    return [validate(body) for body in bodies.values()]


def summary(resource: Resource) -> dict:
    """What the resource's pod reports when it finishes at its default output (contracts §5)."""
    output = workload.output_uri(resource, SETTINGS)
    if isinstance(resource, PreferenceDataset):
        return {"kind": "dataset", "output": output, "fingerprint": f"sha256:{resource.metadata.name}",
                "counts": {"train": 9, "test": 1}}
    return {"kind": "train", "output": output,
            "artifact": {"uri": f"{output}/final", "type": "full" if resource.spec.peft.type == "full" else "adapter",
                         "sha256": {"adapter_model.safetensors": "0" * 64}},
            "merged": f"{output}/merged" if resource.spec.output.merge_adapter else None}


def status(resource: Resource) -> dict:
    """The status the operator writes from that summary."""
    output = workload.output_uri(resource, SETTINGS)
    fields = (preferencedataset.dataset_status if isinstance(resource, PreferenceDataset)
              else finetunejob.training_status)(summary(resource), output)
    return {"phase": "Succeeded", **fields}


def upstream(resources: list[Resource], resource: Resource) -> list[Resource]:
    return [r for r in resources if (r.kind_name, workload.namespace_of(r), r.metadata.name)
            in set(graph.references(resource))]


def from_statuses(resources: list[Resource], resource: FineTuneJob | EvalRun) -> tuple[object, StatusDraft]:
    """The operator: its handler, over an API holding the upstream resources' statuses."""
    api = FakeApi()
    for other in upstream(resources, resource):
        body = other.model_dump(by_alias=True, exclude_none=True, mode="json") | {"status": status(other)}
        api.objects[(other.plural, workload.namespace_of(other), other.metadata.name)] = body
    rt = Runtime(api=api, operator_settings=SETTINGS, settings=RuntimeSettings(progress_key=b"k" * 16),
                 metrics=OperatorMetrics(CollectorRegistry()))
    draft = StatusDraft(None, 1)
    inputs = finetunejob.training_inputs if isinstance(resource, FineTuneJob) else evalrun.eval_inputs
    return asyncio.run(inputs(rt, resource, workload.namespace_of(resource), draft)), draft


def from_layout(resources: list[Resource], resource: FineTuneJob | EvalRun):
    """`kubetune render`: predicted from the specs."""
    resolve = training.resolve_inputs if isinstance(resource, FineTuneJob) else evaluation.resolve_inputs
    return resolve(resource, graph.predicted(resource, {graph.key(r): r for r in resources}, SETTINGS))


def from_summaries(resources: list[Resource], resource: FineTuneJob | EvalRun, tmp_path: Path):
    """`kubetune run`: the earlier steps' summaries."""
    runner = LocalRunner(SETTINGS.artifact_root, tmp_path)
    for other in upstream(resources, resource):
        runner.results[graph.key(other)] = StepResult(other, "Succeeded", summary=summary(other))
    return runner._inputs(resource)


def named(resources: list[Resource], name: str):
    return next(r for r in resources if r.metadata.name == name)


@pytest.mark.parametrize("name", [DPO, EVAL])
def test_the_three_sources_resolve_a_chain_alike(name, tmp_path):
    resources = chain()
    resource = named(resources, name)
    operator, draft = from_statuses(resources, resource)
    assert operator is not None, draft.next
    assert from_summaries(resources, resource, tmp_path) == operator
    rendered = from_layout(resources, resource)
    if isinstance(resource, FineTuneJob):
        # A dataset's fingerprint exists only once it is prepared: render leaves it to the spec.
        assert operator.dataset_fingerprint == "sha256:safety-prefs"
        assert rendered == replace(operator, dataset_fingerprint=None)
        assert operator.start_from_uri == f"s3://art/root/llm-team/finetunejobs/{SFT}/final"
    else:
        assert rendered == operator
        assert operator.candidates["dpo-merged"].model == f"s3://art/root/llm-team/finetunejobs/{DPO}/merged"
        assert operator.candidates["sft"].adapter == f"s3://art/root/llm-team/finetunejobs/{SFT}/final"


def test_a_fingerprint_the_spec_pins_wins_everywhere(tmp_path):
    def pin(bodies):
        bodies[DPO]["spec"]["dataset"]["fingerprint"] = "sha256:" + "a" * 64

    resources = chain(pin)
    dpo = named(resources, DPO)
    answers = [from_statuses(resources, dpo)[0], from_summaries(resources, dpo, tmp_path), from_layout(resources, dpo)]
    assert {a.dataset_fingerprint for a in answers} == {"sha256:" + "a" * 64}


@pytest.mark.parametrize(
    ("name", "edit", "reason", "message"),
    [
        (DPO, lambda b: b[SFT]["spec"].update(peft={"type": "full"}), "StartPointNotAdapter", "not an adapter"),
        (EVAL, lambda b: b[DPO]["spec"]["output"].update(mergeAdapter=False), "NoMergedModel", "no merged model"),
    ],
)
def test_an_input_that_can_never_serve_is_refused_by_all_three(name, edit, reason, message, tmp_path):
    resources = chain(edit)
    resource = named(resources, name)
    operator, draft = from_statuses(resources, resource)
    assert operator is None and draft.phase == "Failed"
    assert draft.get_condition("Failed")["reason"] == reason and message in draft.next["message"]
    with pytest.raises(UserError, match=message):
        from_summaries(resources, resource, tmp_path)
    with pytest.raises(ValidationFailed, match=message):
        graph.render(resources, SETTINGS)
