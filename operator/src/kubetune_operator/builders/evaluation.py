"""EvalRun → eval config (ConfigMap) and the Job that runs `kubetune-trainer eval`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kubetune_operator.api import EvalRun, FineTuneJob, PreferenceDataset, Resource
from kubetune_operator.builders import workload
from kubetune_operator.builders.inputs import InputRefused, Lookup
from kubetune_operator.builders.kind import KindBuilder, Probe
from kubetune_operator.builders.settings import OperatorSettings


@dataclass(frozen=True)
class CandidateArtifacts:
    """A candidate resolved to URIs: a model, an adapter, or both.

    An adapter without a model is loaded onto the true base recorded in its lineage file.
    """

    model: str | None = None
    adapter: str | None = None


@dataclass(frozen=True)
class EvalInputs:
    """The test set's URI and each FineTuneJob candidate's artifacts (resolve_inputs)."""

    test_set_uri: str | None
    candidates: dict[str, CandidateArtifacts] = field(default_factory=dict)


def references(evr: EvalRun) -> list[tuple[type[Resource], str]]:
    """Its test set, when a PreferenceDataset holds it, and every FineTuneJob candidate."""
    spec = evr.spec
    refs: list[tuple[type[Resource], str]] = []
    if spec.test_set.preference_dataset:
        refs.append((PreferenceDataset, spec.test_set.preference_dataset))
    refs += [(FineTuneJob, c.fine_tune_job) for c in spec.candidates if c.fine_tune_job]
    return refs


def resolve_inputs(evr: EvalRun, artifacts_of: Lookup) -> EvalInputs:
    """The test set and every FineTuneJob candidate. `artifacts_of` may answer None for an input not
    ready yet, which is then left out; a merged model asked of a job that writes none is refused."""
    spec = evr.spec
    test_set = spec.test_set.uri
    if spec.test_set.preference_dataset:
        data = artifacts_of(PreferenceDataset, spec.test_set.preference_dataset)
        test_set = data.uri if data else None
    candidates = {}
    for candidate in spec.candidates:
        job = artifacts_of(FineTuneJob, candidate.fine_tune_job) if candidate.fine_tune_job else None
        if job is None:
            continue
        resolved = trained_candidate(candidate.use_merged, job.type, job.uri, job.merged_uri)
        if resolved is None:
            raise InputRefused(
                "NoMergedModel",
                f"candidate {candidate.name}: useMerged is set but FineTuneJob {candidate.fine_tune_job} wrote "
                "no merged model (set its output.mergeAdapter)",
            )
        candidates[candidate.name] = resolved
    return EvalInputs(test_set_uri=test_set, candidates=candidates)


def rerun_inputs(evr: EvalRun, inputs: EvalInputs, probe: Probe) -> list:
    """Its test set's content, its resolved inputs, the models it names itself and what the steps it
    waits for produced."""
    models = [probe.model(c.model) for c in evr.spec.candidates if c.model]
    return [probe.files(inputs.test_set_uri), inputs, models, probe.upstream()]


def trained_candidate(
    use_merged: bool, artifact_type: str | None, final_uri: str | None, merged_uri: str | None
) -> CandidateArtifacts | None:
    """A FineTuneJob's output as a candidate: its merged model when asked for (None when it wrote
    none), its full model, or its adapter, which evaluation loads onto the adapter's true base."""
    if use_merged:
        return CandidateArtifacts(model=merged_uri) if merged_uri else None
    if artifact_type == "full":
        return CandidateArtifacts(model=final_uri)
    return CandidateArtifacts(adapter=final_uri)


def job_name(evr: EvalRun) -> str:
    return f"{evr.metadata.name}-eval"


def config_map_name(evr: EvalRun) -> str:
    return f"{evr.metadata.name}-eval-config"


def gpus(evr: EvalRun) -> int:
    if evr.spec.resources.gpus is not None:
        return evr.spec.resources.gpus
    return evr.spec.engine.tensor_parallel if evr.spec.engine.type == "vllm" else 0


def _candidate(candidate, inputs: EvalInputs) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": candidate.name, "baseline": candidate.baseline}
    if candidate.fine_tune_job:
        resolved = inputs.candidates.get(candidate.name, CandidateArtifacts())
        entry |= {"model": resolved.model, "adapter": resolved.adapter}
    else:
        entry |= {"model": candidate.model, "adapter": candidate.adapter}
    return {k: v for k, v in entry.items() if v is not None}


def _metric(metric) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": metric.name, "type": metric.type}
    if metric.pattern is not None:
        entry["pattern"] = metric.pattern
    if metric.rules is not None:
        entry["rules"] = [rule.model_dump() for rule in metric.rules]
    if metric.judge is not None:
        entry["judge"] = metric.judge.model_dump()
    return entry


def eval_config(evr: EvalRun, settings: OperatorSettings, inputs: EvalInputs) -> dict[str, Any]:
    """The EvalConfig of docs/contracts.md §7, rendered from the spec."""
    spec = evr.spec
    engine = spec.engine
    config: dict[str, Any] = {
        "output": workload.output_uri(evr, settings),
        "test_set": inputs.test_set_uri,
        "test_split": spec.test_set.split,
        "max_samples": spec.test_set.max_samples,
        "system_prompt": spec.test_set.system_prompt,
        "candidates": [_candidate(c, inputs) for c in spec.candidates],
        "engine": engine.type,
        "tensor_parallel": engine.tensor_parallel,
        "max_new_tokens": engine.max_new_tokens,
        "temperature": engine.temperature,
        "top_p": engine.top_p,
        "beam_width": engine.beam_width,
        "batch_size": engine.batch_size,
        "max_model_len": engine.max_model_len,
        "seed": engine.seed,
        "metrics": [_metric(m) for m in spec.metrics],
        "stratify_by": spec.stratify_by,
        "bootstrap_samples": spec.bootstrap.samples,
        "confidence": spec.bootstrap.confidence,
        "bootstrap_seed": spec.bootstrap.seed,
        "gates": [gate.model_dump(exclude_none=True) for gate in spec.gates],
    }
    return {key: value for key, value in config.items() if value is not None}


def build(evr: EvalRun, settings: OperatorSettings, inputs: EvalInputs) -> list[workload.Manifest]:
    spec = evr.spec
    resources = spec.resources
    config = workload.config_map(
        evr, config_map_name(evr), "eval", {"config.yaml": workload.dump_config(eval_config(evr, settings, inputs))}
    )
    volumes, mounts = workload.scratch_volumes(resources.shared_memory, resources.ephemeral_storage)
    config_volume, config_mount = workload.config_volume(config_map_name(evr))
    extras = workload.extras(evr, settings)
    container = workload.container(
        name="eval",
        image=resources.image or settings.eval_image,
        command=["kubetune-trainer", "eval", "--config", workload.CONFIG_FILE],
        env=workload.pod_env(evr, settings) + extras.env,
        env_from=extras.env_from,
        resources=workload.compute_resources(resources.cpu, resources.memory, gpus(evr), resources.gpu_resource_name,
                                             resources.ephemeral_storage),
        mounts=[*mounts, config_mount, *extras.mounts],
        ports=workload.METRICS_PORTS,
    )
    pod = workload.pod_spec([container], [*volumes, config_volume, *extras.volumes],
                            workload.effective_scheduling(spec.scheduling, settings, "evaluation"), spec.storage)
    return [
        config,
        workload.job(
            evr,
            job_name(evr),
            "eval",
            pod,
            backoff_limit=2,
            active_deadline_seconds=spec.active_deadline_seconds,
            queue_name=spec.queue_name,
        ),
    ]


# Nothing takes an EvalRun as input: it names no artifacts of its own for others.
KIND = KindBuilder(
    EvalRun,
    references=references,
    build=build,
    rerun_inputs=rerun_inputs,
    resolve_inputs=resolve_inputs,
)
