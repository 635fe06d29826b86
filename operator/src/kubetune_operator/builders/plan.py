"""A set of resource documents → validated resources in dependency order, with inputs predicted.

The operator resolves a FineTuneJob's dataset from the PreferenceDataset's status; `kubetune
render` and `kubetune run` have no cluster, so they predict the same URIs from the specs (the
default output layout of docs/contracts.md §6).
"""

from __future__ import annotations

from kubetune_operator.api import EvalRun, FineTuneJob, PreferenceDataset, Resource
from kubetune_operator.builders import dataset, evaluation, training, workload
from kubetune_operator.builders.inputs import Artifacts, InputRefused, Lookup
from kubetune_operator.builders.settings import OperatorSettings
from kubetune_operator.errors import ValidationFailed

# What each kind that others take as input will have produced, by the layout.
PREDICTED = {PreferenceDataset: dataset.predicted_artifacts, FineTuneJob: training.predicted_artifacts}


def key(resource: Resource) -> tuple[str, str, str]:
    return (resource.kind_name, workload.namespace_of(resource), resource.metadata.name)


def references(resource: Resource) -> list[tuple[str, str, str]]:
    """The resources this one waits for."""
    namespace = workload.namespace_of(resource)
    refs: list[tuple[str, str, str]] = []
    if isinstance(resource, FineTuneJob):
        if resource.spec.dataset.preference_dataset:
            refs.append(("PreferenceDataset", namespace, resource.spec.dataset.preference_dataset))
        if resource.spec.start_from and resource.spec.start_from.fine_tune_job:
            refs.append(("FineTuneJob", namespace, resource.spec.start_from.fine_tune_job))
    elif isinstance(resource, EvalRun):
        if resource.spec.test_set.preference_dataset:
            refs.append(("PreferenceDataset", namespace, resource.spec.test_set.preference_dataset))
        refs += [("FineTuneJob", namespace, c.fine_tune_job) for c in resource.spec.candidates if c.fine_tune_job]
    return refs


def order(resources: list[Resource], require_references: bool = True) -> list[Resource]:
    """Dependencies first (a stable topological order); missing references and cycles are errors."""
    by_key = {}
    for resource in resources:
        if key(resource) in by_key:
            raise ValidationFailed(f"{resource.kind_name} {resource.metadata.name}: defined twice")
        by_key[key(resource)] = resource
    if require_references:
        missing = [
            f"{r.kind_name} {r.metadata.name}: references {kind} {name}, which is not among the documents"
            for r in resources
            for kind, _, name in references(r)
            if (kind, workload.namespace_of(r), name) not in by_key
        ]
        if missing:
            raise ValidationFailed("\n".join(missing))
    ordered: list[Resource] = []
    state: dict[tuple, str] = {}

    def visit(resource: Resource, chain: list[str]) -> None:
        mark = state.get(key(resource))
        if mark == "done":
            return
        if mark == "visiting":
            raise ValidationFailed("reference cycle: " + " -> ".join([*chain, resource.metadata.name]))
        state[key(resource)] = "visiting"
        for ref in references(resource):
            if ref in by_key:
                visit(by_key[ref], [*chain, resource.metadata.name])
        state[key(resource)] = "done"
        ordered.append(resource)

    for resource in resources:
        visit(resource, [])
    return ordered


def predicted(resource: Resource, known: dict, settings: OperatorSettings) -> Lookup:
    """The artifacts of `resource`'s inputs by the default layout, before anything ran: from their
    specs when they are among the documents, else by name."""
    namespace = workload.namespace_of(resource)

    def artifacts_of(kind: type[Resource], name: str) -> Artifacts:
        producer = known.get((kind.kind_name, namespace, name))
        if producer is not None:
            output = workload.output_uri(producer, settings)
        else:
            output = f"{settings.artifact_root.rstrip('/')}/{namespace}/{kind.plural}/{name}"
        return PREDICTED[kind](output, producer)

    return artifacts_of


def build(resource: Resource, known: dict, settings: OperatorSettings) -> list[workload.Manifest]:
    """The children the operator would create, with inputs predicted from the other documents; an
    input that could never serve is refused, as the operator would refuse it."""
    try:
        if isinstance(resource, PreferenceDataset):
            return dataset.build(resource, settings)
        if isinstance(resource, FineTuneJob):
            inputs = training.resolve_inputs(resource, predicted(resource, known, settings))
            return training.build(resource, settings, inputs)
        if isinstance(resource, EvalRun):
            inputs = evaluation.resolve_inputs(resource, predicted(resource, known, settings))
            return evaluation.build(resource, settings, inputs)
    except InputRefused as refused:
        raise ValidationFailed(f"{resource.kind_name} {resource.metadata.name}: {refused.message}") from refused
    raise TypeError(f"no builder for {type(resource).__name__}")


def render(resources: list[Resource], settings: OperatorSettings) -> list[workload.Manifest]:
    ordered = order(resources, require_references=False)
    known = {key(r): r for r in ordered}
    return [manifest for resource in ordered for manifest in build(resource, known, settings)]
