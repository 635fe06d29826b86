"""PreferenceDataset → the Job that runs `kubetune-trainer data prepare`."""

from __future__ import annotations

import json
from typing import Any

from kubetune_operator.api import PreferenceDataset, Resource
from kubetune_operator.builders import workload
from kubetune_operator.builders.inputs import Artifacts
from kubetune_operator.builders.kind import KindBuilder, Probe
from kubetune_operator.builders.settings import OperatorSettings


def job_name(pds: PreferenceDataset) -> str:
    return f"{pds.metadata.name}-data"


def predicted_artifacts(output: str, pds: PreferenceDataset | None = None) -> Artifacts:
    """What a dataset at `output` will hold, before it ran: its directory (the fingerprint is not known)."""
    return Artifacts(uri=output)


def summary_artifacts(summary: dict[str, Any]) -> Artifacts:
    """What a dataset holds, from its pod's termination summary (docs/contracts.md §5)."""
    return Artifacts(uri=summary.get("output"), fingerprint=summary.get("fingerprint"))


def references(pds: PreferenceDataset) -> list[tuple[type[Resource], str]]:
    """A dataset reads only its sources: it waits for no other resource."""
    return []


def rerun_inputs(pds: PreferenceDataset, inputs: None, probe: Probe) -> list:
    """Its source files' content; with a dataset_info.json and no sources, the folder it names files in."""
    sources = [s.uri for s in pds.spec.sources]
    if pds.spec.llamafactory and pds.spec.llamafactory.dataset_info:
        info = pds.spec.llamafactory.dataset_info
        sources.append(info.rsplit("/", 1)[0] if not pds.spec.sources else info)
    return [probe.files(s) for s in sources]


def column_map(pds: PreferenceDataset) -> str | None:
    """An inline mapping in dataset_info.json's own shape (snake_case tags, as LLaMA-Factory spells them)."""
    mapping = pds.spec.llamafactory
    if mapping is None or mapping.columns is None:
        return None
    entry: dict = {"columns": mapping.columns.model_dump(exclude_none=True)}
    if mapping.formatting:
        entry["formatting"] = mapping.formatting
    entry["ranking"] = mapping.ranking if mapping.ranking is not None else pds.spec.kind == "preference"
    if mapping.tags:
        entry["tags"] = mapping.tags.model_dump(exclude_none=True)
    return json.dumps(entry, sort_keys=True, ensure_ascii=False)


def command(pds: PreferenceDataset, output: str) -> list[str]:
    spec = pds.spec
    argv = ["kubetune-trainer", "data", "prepare", "--kind", spec.kind]
    for source in spec.sources:
        argv += ["--source", source.uri]
    argv += ["--format", spec.format]
    if spec.llamafactory and spec.llamafactory.dataset_info:
        argv += ["--dataset-info", spec.llamafactory.dataset_info, "--dataset", spec.llamafactory.dataset]
    inline = column_map(pds)
    if inline:
        argv += ["--column-map", inline]
    argv += ["--test-fraction", repr(spec.split.test_fraction), "--seed", str(spec.split.seed)]
    if spec.split.stratify_by:
        argv += ["--stratify-by", spec.split.stratify_by]
    argv.append("--dedupe" if spec.dedupe else "--no-dedupe")
    if spec.limits.max_rows:
        argv += ["--max-rows", str(spec.limits.max_rows)]
    if spec.limits.max_length:
        argv += ["--max-length", str(spec.limits.max_length)]
    argv += [
        "--on-bad-rows",
        spec.bad_rows.policy,
        "--max-drop-fraction",
        repr(spec.bad_rows.max_drop_fraction),
        "--output",
        output,
    ]
    return argv


def build(pds: PreferenceDataset, settings: OperatorSettings) -> list[workload.Manifest]:
    spec = pds.spec
    volumes, mounts = workload.scratch_volumes()
    extras = workload.extras(pds, settings)
    container = workload.container(
        name="data",
        image=settings.trainer_image,
        command=command(pds, workload.output_uri(pds, settings)),
        env=workload.pod_env(pds, settings),
        resources=workload.compute_resources(spec.resources.cpu, spec.resources.memory),
        mounts=[*mounts, *extras.mounts],
        ports=workload.METRICS_PORTS,
    )
    volumes += extras.volumes
    pod = workload.pod_spec([container], volumes, spec.scheduling, spec.storage)
    return [
        workload.job(
            pds,
            job_name(pds),
            "data",
            pod,
            backoff_limit=3,
            active_deadline_seconds=spec.active_deadline_seconds,
        )
    ]


KIND = KindBuilder(
    PreferenceDataset,
    references=references,
    build=lambda pds, settings, inputs: build(pds, settings),  # it resolves no inputs
    rerun_inputs=rerun_inputs,
    predicted_artifacts=predicted_artifacts,
    summary_artifacts=summary_artifacts,
)
