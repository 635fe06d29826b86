"""A set of resource documents → validated resources in dependency order, with inputs predicted.

The operator resolves a FineTuneJob's dataset from the PreferenceDataset's status; `kubetune
render` and `kubetune run` have no cluster, so they predict the same URIs from the specs (the
default output layout of docs/contracts.md §6).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kubetune_operator import yaml12
from kubetune_operator.api import EvalRun, FineTuneJob, PreferenceDataset, Resource
from kubetune_operator.api.validation import parse
from kubetune_operator.builders import dataset, evaluation, training, workload
from kubetune_operator.builders.settings import OperatorSettings
from kubetune_operator.errors import ValidationFailed, shorten

# Errors listed per document: ten thousand unknown fields need not be ten thousand lines.
MAX_ERRORS_SHOWN = 20


@dataclass(frozen=True)
class Document:
    source: str  # "file.yaml#index"
    body: dict[str, Any]


def load_documents(paths: Iterable[Path]) -> list[Document]:
    paths = [Path(path) for path in paths]
    documents = []
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ValidationFailed(f"{path}: {exc.strerror or exc}") from exc
        except UnicodeDecodeError as exc:
            raise ValidationFailed(f"{path}: not UTF-8 text (byte {exc.start} is {exc.object[exc.start]:#04x})") from exc
        try:
            for index, (_, body) in enumerate(yaml12.load_all(text)):
                if body is not None:
                    documents.append(Document(f"{path}#{index}", body))
        except yaml12.YamlError as exc:
            raise ValidationFailed(f"{path}:{exc.line}:{exc.column}: {exc.message}") from exc
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
            raise ValidationFailed(f"{where}: not valid YAML: {getattr(exc, 'problem', None) or exc}") from exc
    if not documents:
        # Nothing to do is never success: an empty file or a wrong glob would look like a finished run.
        raise ValidationFailed(f"no resource documents in {', '.join(map(str, paths))}")
    return documents


def describe(document: Document) -> str:
    body = document.body if isinstance(document.body, dict) else {}
    name = (body.get("metadata") or {}).get("name", "?") if isinstance(body.get("metadata"), dict) else "?"
    return f"{document.source} ({shorten(str(body.get('kind', '?')))} {shorten(str(name))})"


def validate_all(documents: list[Document]) -> list[Resource]:
    """Every document against the CRD schemas; one error lists every bad field of every document."""
    problems = []
    resources = []
    first_seen: dict[tuple[str, str, str], str] = {}
    for document in documents:
        resource, errors = parse(document.body)
        if errors:
            shown = errors[:MAX_ERRORS_SHOWN]
            problems += [f"{describe(document)}: {error}" for error in shown]
            if len(errors) > len(shown):
                problems.append(f"{describe(document)}: … and {len(errors) - len(shown)} more errors")
            continue
        if key(resource) in first_seen:
            problems.append(f"{describe(document)}: defined twice (first in {first_seen[key(resource)]})")
        first_seen.setdefault(key(resource), document.source)
        resources.append(resource)
    if problems:
        raise ValidationFailed("\n".join(problems))
    return resources


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


def _output_of(kind: type[Resource], namespace: str, name: str, known: dict, settings: OperatorSettings) -> str:
    resource = known.get((kind.kind_name, namespace, name))
    if resource is not None:
        return workload.output_uri(resource, settings)
    return f"{settings.artifact_root.rstrip('/')}/{namespace}/{kind.plural}/{name}"


def training_inputs(ftj: FineTuneJob, known: dict, settings: OperatorSettings) -> training.TrainingInputs:
    namespace = workload.namespace_of(ftj)
    spec = ftj.spec
    if spec.dataset.preference_dataset:
        dataset_uri = _output_of(PreferenceDataset, namespace, spec.dataset.preference_dataset, known, settings)
    else:
        dataset_uri = spec.dataset.uri
    start_from = None
    if spec.start_from and spec.start_from.fine_tune_job:
        start_from = _output_of(FineTuneJob, namespace, spec.start_from.fine_tune_job, known, settings) + "/final"
    elif spec.start_from:
        start_from = spec.start_from.adapter_uri
    return training.TrainingInputs(dataset_uri=dataset_uri, start_from_uri=start_from)


def eval_inputs(evr: EvalRun, known: dict, settings: OperatorSettings) -> evaluation.EvalInputs:
    namespace = workload.namespace_of(evr)
    spec = evr.spec
    if spec.test_set.preference_dataset:
        test_set = _output_of(PreferenceDataset, namespace, spec.test_set.preference_dataset, known, settings)
    else:
        test_set = spec.test_set.uri
    candidates = {}
    for candidate in spec.candidates:
        if not candidate.fine_tune_job:
            continue
        job = known.get(("FineTuneJob", namespace, candidate.fine_tune_job))
        output = _output_of(FineTuneJob, namespace, candidate.fine_tune_job, known, settings)
        artifact_type = "full" if job is not None and job.spec.peft.type == "full" else "adapter"
        candidates[candidate.name] = evaluation.trained_candidate(
            candidate.use_merged, artifact_type, f"{output}/final", f"{output}/merged"
        )
    return evaluation.EvalInputs(test_set_uri=test_set, candidates=candidates)


def build(resource: Resource, known: dict, settings: OperatorSettings) -> list[workload.Manifest]:
    """The children the operator would create, with inputs predicted from the other documents."""
    if isinstance(resource, PreferenceDataset):
        return dataset.build(resource, settings)
    if isinstance(resource, FineTuneJob):
        return training.build(resource, settings, training_inputs(resource, known, settings))
    if isinstance(resource, EvalRun):
        return evaluation.build(resource, settings, eval_inputs(resource, known, settings))
    raise TypeError(f"no builder for {type(resource).__name__}")


def render(resources: list[Resource], settings: OperatorSettings) -> list[workload.Manifest]:
    ordered = order(resources, require_references=False)
    known = {key(r): r for r in ordered}
    return [manifest for resource in ordered for manifest in build(resource, known, settings)]
