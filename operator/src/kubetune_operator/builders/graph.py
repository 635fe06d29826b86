"""Resource documents as a graph: each one's key and references, the dependency order, and the
children `kubetune render` builds along it with inputs predicted.

The operator resolves a resource's inputs from the statuses of those it references; `kubetune
render` and `kubetune run` have no cluster, so they predict the same URIs from the specs (the
default output layout of docs/contracts.md §6). Every kind is handled alike, through its
`KindBuilder` (builders/kind.py) looked up in builders/registry.py.
"""

from __future__ import annotations

from kubetune_operator.api import Resource
from kubetune_operator.builders import workload
from kubetune_operator.builders.inputs import Artifacts, InputRefused, Lookup
from kubetune_operator.builders.registry import builder_of
from kubetune_operator.builders.settings import OperatorSettings
from kubetune_operator.errors import ValidationFailed


def key(resource: Resource) -> tuple[str, str, str]:
    return (resource.kind_name, workload.namespace_of(resource), resource.metadata.name)


def references(resource: Resource) -> list[tuple[str, str, str]]:
    """The keys of the resources this one waits for."""
    namespace = workload.namespace_of(resource)
    return [(kind.kind_name, namespace, name) for kind, name in builder_of(type(resource)).references(resource)]


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
        return builder_of(kind).predicted_artifacts(output, producer)

    return artifacts_of


def build(resource: Resource, known: dict, settings: OperatorSettings) -> list[workload.Manifest]:
    """The children the operator would create, with inputs predicted from the other documents; an
    input that could never serve is refused, as the operator would refuse it."""
    kind = builder_of(type(resource))
    try:
        inputs = kind.resolve_inputs(resource, predicted(resource, known, settings))
    except InputRefused as refused:
        raise ValidationFailed(f"{resource.kind_name} {resource.metadata.name}: {refused.message}") from refused
    return kind.build(resource, settings, inputs)


def render(resources: list[Resource], settings: OperatorSettings) -> list[workload.Manifest]:
    ordered = order(resources, require_references=False)
    known = {key(r): r for r in ordered}
    return [manifest for resource in ordered for manifest in build(resource, known, settings)]
