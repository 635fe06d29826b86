"""FineTuneJob → trainer config (ConfigMap), headless Service for rendezvous, Indexed Job."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubetune_operator.api import FineTuneJob, PreferenceDataset, Resource
from kubetune_operator.api.finetunejob import FineTuneJobSpec, Kto, Lora, Orpo, Simpo
from kubetune_operator.builders import workload
from kubetune_operator.builders.inputs import Artifacts, InputRefused, Lookup
from kubetune_operator.builders.kind import KindBuilder, Probe
from kubetune_operator.builders.settings import OperatorSettings

RENDEZVOUS_PORT = 29500


@dataclass(frozen=True)
class TrainingInputs:
    """The dataset and start point, resolved from the resources that produce them (resolve_inputs)."""

    dataset_uri: str | None
    dataset_fingerprint: str | None = None
    start_from_uri: str | None = None


def references(ftj: FineTuneJob) -> list[tuple[type[Resource], str]]:
    """Its dataset and the job it starts from, when they are resources."""
    spec = ftj.spec
    refs: list[tuple[type[Resource], str]] = []
    if spec.dataset.preference_dataset:
        refs.append((PreferenceDataset, spec.dataset.preference_dataset))
    if spec.start_from and spec.start_from.fine_tune_job:
        refs.append((FineTuneJob, spec.start_from.fine_tune_job))
    return refs


def resolve_inputs(ftj: FineTuneJob, artifacts_of: Lookup) -> TrainingInputs:
    """The dataset (the spec's fingerprint pinned first, else the dataset's) and the adapter to start
    from. `artifacts_of` may answer None for an input not ready yet, whose URI then stays None; a
    start point that is not an adapter is refused (startFrom merges an adapter into the base)."""
    spec = ftj.spec
    dataset_uri, fingerprint = spec.dataset.uri, spec.dataset.fingerprint
    if spec.dataset.preference_dataset:
        data = artifacts_of(PreferenceDataset, spec.dataset.preference_dataset)
        dataset_uri = data.uri if data else None
        fingerprint = fingerprint or (data.fingerprint if data else None)
    start_from = spec.start_from.adapter_uri if spec.start_from else None
    if spec.start_from and spec.start_from.fine_tune_job:
        start = artifacts_of(FineTuneJob, spec.start_from.fine_tune_job)
        if start is not None and start.type != "adapter":
            raise InputRefused(
                "StartPointNotAdapter",
                f"startFrom.fineTuneJob {spec.start_from.fine_tune_job} wrote a {start.type or 'unknown'} "
                "model, not an adapter: startFrom merges an adapter into the base",
            )
        start_from = start.uri if start else None
    return TrainingInputs(dataset_uri=dataset_uri, dataset_fingerprint=fingerprint, start_from_uri=start_from)


def rerun_inputs(ftj: FineTuneJob, inputs: TrainingInputs, probe: Probe) -> list:
    """Its base model, its resolved inputs and what the steps it waits for produced."""
    return [probe.model(ftj.spec.base_model), inputs, probe.upstream()]


def predicted_artifacts(output: str, ftj: FineTuneJob | None = None) -> Artifacts:
    """What a job at `output` will write, by the layout (docs/contracts.md §6), before it ran; from its
    spec when it is known (full or adapter, merged/ or not), else an adapter with merged/."""
    full = ftj is not None and ftj.spec.peft.type == "full"
    merged = ftj is None or ftj.spec.output.merge_adapter
    return Artifacts(
        uri=f"{output}/final", type="full" if full else "adapter", merged_uri=f"{output}/merged" if merged else None
    )


def summary_artifacts(summary: dict[str, Any]) -> Artifacts:
    """What a job wrote, from its pod's termination summary (docs/contracts.md §5). A summary too
    long for the termination message leaves `artifact` out; the layout (§6) still says where final/ is."""
    artifact = summary.get("artifact") if isinstance(summary.get("artifact"), dict) else {}
    return Artifacts(
        uri=artifact.get("uri") or f"{summary.get('output')}/final",
        type=artifact.get("type"),
        merged_uri=summary.get("merged"),
    )


def job_name(ftj: FineTuneJob) -> str:
    return f"{ftj.metadata.name}-train"


def config_map_name(ftj: FineTuneJob) -> str:
    return f"{ftj.metadata.name}-train-config"


def deepspeed_stage(ftj: FineTuneJob) -> int:
    resources = ftj.spec.resources
    if resources.deepspeed is not None:
        return resources.deepspeed.stage
    # ZeRO-3 by default wherever more than one GPU shares the work, as the seed workflows do.
    return 3 if resources.nodes * resources.gpus_per_node > 1 else 0


def trainer_config(ftj: FineTuneJob, settings: OperatorSettings, inputs: TrainingInputs) -> dict[str, Any]:
    """The TrainConfig of docs/contracts.md §7, rendered from the spec."""
    spec = ftj.spec
    hp = spec.hyperparameters
    config: dict[str, Any] = {
        "method": spec.method,
        "base_model": spec.base_model,
        "dataset": inputs.dataset_uri,
        "dataset_fingerprint": inputs.dataset_fingerprint or spec.dataset.fingerprint,
        "output": workload.output_uri(ftj, settings),
        "start_from": inputs.start_from_uri,
        "peft": spec.peft.type,
        "learning_rate": hp.learning_rate,
        "num_train_epochs": hp.epochs,
        "max_steps": hp.max_steps,
        "per_device_train_batch_size": hp.batch_size,
        "gradient_accumulation_steps": hp.gradient_accumulation_steps,
        "cutoff_len": hp.cutoff_length,
        "warmup_ratio": hp.warmup_ratio,
        "weight_decay": hp.weight_decay,
        "lr_scheduler_type": hp.lr_scheduler,
        "max_grad_norm": hp.max_grad_norm,
        "seed": hp.seed,
        "full_determinism": hp.deterministic,
        "precision": hp.precision,
        "gradient_checkpointing": hp.gradient_checkpointing,
        "save_steps": spec.checkpointing.every_steps,
        "save_total_limit": spec.checkpointing.keep,
        "deepspeed_stage": deepspeed_stage(ftj),
        "merge_final": spec.output.merge_adapter,
    }
    if spec.peft.type != "full":
        lora = spec.peft.lora or Lora()
        config |= {
            "lora_r": lora.r,
            "lora_alpha": lora.alpha,
            "lora_dropout": lora.dropout,
            "lora_target_modules": list(lora.target_modules),
        }
    if spec.resources.deepspeed is not None:
        config |= {
            "offload_optimizer": spec.resources.deepspeed.offload_optimizer,
            "offload_params": spec.resources.deepspeed.offload_params,
        }
    if spec.method == "sft" and spec.sft is not None:
        config |= {"completion_only_loss": spec.sft.completion_only_loss, "packing": spec.sft.packing}
        if spec.sft.key_tokens is not None:
            config |= {
                "key_token_patterns": list(spec.sft.key_tokens.patterns),
                "key_token_weight": spec.sft.key_tokens.weight,
            }
    config |= method_options(spec)
    if spec.tracking is not None:
        config |= {
            "report_to": list(spec.tracking.report_to),
            "run_name": spec.tracking.run_name or ftj.metadata.name,
            "tracking_project": spec.tracking.project,
        }
    return {key: value for key, value in config.items() if value is not None}


def method_options(spec: FineTuneJobSpec) -> dict[str, Any]:
    """The TrainConfig fields of the method's own block (docs/training.md names them)."""
    if spec.method == "dpo" and spec.dpo is not None:
        return {
            "beta": spec.dpo.beta,
            "loss_type": spec.dpo.loss_type,
            "label_smoothing": spec.dpo.label_smoothing,
            "sft_loss_weight": spec.dpo.sft_loss_weight,
            "precompute_ref_log_probs": spec.dpo.precompute_ref_log_probs,
            "padding_free": spec.dpo.padding_free,
        }
    if spec.method == "orpo":
        return {"beta": (spec.orpo or Orpo()).beta}
    if spec.method == "simpo":
        simpo = spec.simpo or Simpo()
        return {"beta": simpo.beta, "simpo_gamma": simpo.gamma, "sft_loss_weight": simpo.sft_loss_weight}
    if spec.method == "kto":
        kto = spec.kto or Kto()
        return {
            "beta": kto.beta,
            "kto_loss_type": kto.loss_type,
            "desirable_weight": kto.desirable_weight,
            "undesirable_weight": kto.undesirable_weight,
            "precompute_ref_log_probs": kto.precompute_ref_log_probs,
        }
    return {}


# The keys a tracking Secret may hold, per tracker, and whether the tracker needs the key.
TRACKING_KEYS = {
    "mlflow": {
        "MLFLOW_TRACKING_URI": True,
        "MLFLOW_TRACKING_USERNAME": False,
        "MLFLOW_TRACKING_PASSWORD": False,
        "MLFLOW_TRACKING_TOKEN": False,
    },
    "wandb": {"WANDB_API_KEY": True, "WANDB_BASE_URL": False, "WANDB_ENTITY": False, "WANDB_MODE": False},
}


def tracking_env(spec: FineTuneJobSpec) -> list[dict[str, Any]]:
    """The trackers' servers and credentials, by reference to the tracking Secret (never by value)."""
    tracking = spec.tracking
    if tracking is None or not tracking.secret_name:
        return []
    return [
        workload.secret_env(key, tracking.secret_name, key, optional=not required)
        for tracker in tracking.report_to
        for key, required in TRACKING_KEYS.get(tracker, {}).items()
    ]


def command(ftj: FineTuneJob) -> list[str]:
    """One process on CPU or one GPU; otherwise the trainer starts its workers through torchrun's
    launcher itself, so a worker's exit code (docs/contracts.md §2) survives to the pod."""
    nodes = ftj.spec.resources.nodes
    gpus = ftj.spec.resources.gpus_per_node
    argv = ["kubetune-trainer", "train", "--config", workload.CONFIG_FILE]
    if nodes == 1 and gpus <= 1:
        return argv
    argv += [f"--nnodes={nodes}", f"--nproc-per-node={gpus}"]
    if nodes == 1:
        return argv
    name = job_name(ftj)
    return [
        *argv,
        # Expanded by the kubelet from the env var the Job controller gives Indexed pods.
        workload.Expanded("--node-rank=$(JOB_COMPLETION_INDEX)"),
        f"--master-addr={name}-0.{name}",
        f"--master-port={RENDEZVOUS_PORT}",
    ]


def service(ftj: FineTuneJob) -> workload.Manifest:
    """Headless Service that gives each indexed pod a stable DNS name for torchrun's rendezvous."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": workload.metadata(ftj, job_name(ftj), "train"),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {
                "kubetune.dev/resource": ftj.metadata.name,
                "kubetune.dev/component": "train",
            },
            "ports": [{"name": "rendezvous", "port": RENDEZVOUS_PORT, "targetPort": RENDEZVOUS_PORT}],
        },
    }


def build(ftj: FineTuneJob, settings: OperatorSettings, inputs: TrainingInputs) -> list[workload.Manifest]:
    spec = ftj.spec
    resources = spec.resources
    config = workload.config_map(
        ftj,
        config_map_name(ftj),
        "train",
        {"config.yaml": workload.dump_config(trainer_config(ftj, settings, inputs))},
    )
    volumes, mounts = workload.scratch_volumes(resources.shared_memory, resources.ephemeral_storage)
    config_volume, config_mount = workload.config_volume(config_map_name(ftj))
    extras = workload.extras(ftj, settings)
    env = workload.pod_env(ftj, settings) + tracking_env(spec)
    if resources.nodes > 1 or resources.gpus_per_node > 1:
        env.append({"name": "NCCL_DEBUG", "value": "WARN"})
    container = workload.container(
        name="trainer",
        image=resources.image or settings.trainer_image,
        command=command(ftj),
        # The user's variables come last: theirs win over kubetune's defaults (KUBETUNE_* excepted).
        env=env + extras.env,
        env_from=extras.env_from,
        resources=workload.compute_resources(
            resources.cpu, resources.memory, resources.gpus_per_node, resources.gpu_resource_name,
            resources.ephemeral_storage,
        ),
        mounts=[*mounts, config_mount, *extras.mounts],
        ports=[*workload.METRICS_PORTS, {"name": "rendezvous", "containerPort": RENDEZVOUS_PORT, "protocol": "TCP"}],
    )
    pod = workload.pod_spec(
        [container], [*volumes, config_volume, *extras.volumes],
        workload.effective_scheduling(spec.scheduling, settings, "training"), spec.storage, subdomain=job_name(ftj)
    )
    return [
        config,
        service(ftj),
        workload.job(
            ftj,
            job_name(ftj),
            "train",
            pod,
            backoff_limit=spec.backoff_limit,
            active_deadline_seconds=spec.active_deadline_seconds,
            suspend=spec.suspend,
            queue_name=spec.queue_name,
            nodes=resources.nodes,
        ),
    ]


KIND = KindBuilder(
    FineTuneJob,
    references=references,
    build=build,
    rerun_inputs=rerun_inputs,
    resolve_inputs=resolve_inputs,
    predicted_artifacts=predicted_artifacts,
    summary_artifacts=summary_artifacts,
    forced_afresh=True,
)
