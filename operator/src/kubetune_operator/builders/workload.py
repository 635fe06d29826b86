"""The workload every kind runs, as every child manifest shares it: names, labels, owner references,
the progress Secret, the config map, the env, the restricted pod and the Job."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from kubetune_operator.api import Resource
from kubetune_operator.api.pod import MODEL_CACHE_PATH, PodOptions
from kubetune_operator.api.resource import Scheduling, Storage
from kubetune_operator.builders.settings import OperatorSettings
from kubetune_operator.exitcodes import PERMANENT

CONFIG_DIR = "/etc/kubetune"
CONFIG_FILE = f"{CONFIG_DIR}/config.yaml"
SCRATCH_DIR = "/scratch"
# The S3 CA bundle's file, from a ConfigMap (Storage.caBundle or the chart's storage.caBundle).
CA_DIR = "/etc/kubetune-ca"
CA_FILE = f"{CA_DIR}/ca.crt"
METRICS_PORT = 9400
# The images create this user (images/*/Dockerfile).
RUN_AS_USER = 10001
# A preempted trainer writes a checkpoint on SIGTERM; give it time to upload.
TERMINATION_GRACE_SECONDS = 300

Manifest = dict[str, Any]


def namespace_of(resource: Resource) -> str:
    return resource.metadata.namespace or "default"


def labels(resource: Resource, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/managed-by": "kubetune",
        "app.kubernetes.io/part-of": "kubetune",
        "kubetune.dev/kind": resource.singular,
        "kubetune.dev/resource": resource.metadata.name,
        "kubetune.dev/component": component,
    }


def owner_references(resource: Resource) -> list[dict[str, Any]]:
    """Children are garbage-collected with their resource; artifacts in S3 stay."""
    if not resource.metadata.uid:
        return []
    return [
        {
            "apiVersion": resource.api_version,
            "kind": resource.kind_name,
            "name": resource.metadata.name,
            "uid": resource.metadata.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def metadata(resource: Resource, name: str, component: str, extra_labels: dict[str, str] | None = None) -> Manifest:
    meta: Manifest = {
        "name": name,
        "namespace": namespace_of(resource),
        "labels": labels(resource, component) | (extra_labels or {}),
    }
    owners = owner_references(resource)
    if owners:
        meta["ownerReferences"] = owners
    return meta


def output_uri(resource: Resource, settings: OperatorSettings) -> str:
    explicit = resource.spec.output.uri
    if explicit:
        return explicit.rstrip("/")
    root = settings.artifact_root.rstrip("/")
    return f"{root}/{namespace_of(resource)}/{resource.plural}/{resource.metadata.name}"


def progress_secret_name(resource: Resource) -> str:
    # The uid keeps a re-created namesake from meeting its predecessor's Secret (not yet
    # garbage-collected), whose token would no longer match: the operator cannot read a Secret to
    # tell. A manifest rendered for no resource in a cluster has no uid yet.
    uid = resource.metadata.uid
    return f"{resource.metadata.name}-progress-{uid}" if uid else f"{resource.metadata.name}-progress"


def progress_secret(resource: Resource, token: str) -> Manifest:
    """The bearer token a pod presents when it reports progress. The operator writes it, never reads it."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(resource, progress_secret_name(resource), "progress"),
        "type": "Opaque",
        "stringData": {"token": token},
    }


def config_map(resource: Resource, name: str, component: str, files: dict[str, str]) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(resource, name, component),
        "data": dict(files),
    }


def dump_config(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, sort_keys=False, allow_unicode=True)


def _env(name: str, value: str) -> dict[str, Any]:
    return {"name": name, "value": value}


def secret_env(name: str, secret: str, key: str, optional: bool = False) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": secret, "key": key}
    if optional:
        ref["optional"] = True
    return {"name": name, "valueFrom": {"secretKeyRef": ref}}


def effective_storage(storage: Storage, settings: OperatorSettings) -> Storage:
    """The resource's storage, with the chart's S3 endpoint and CA bundle where it names none."""
    return storage.model_copy(update={"endpoint_url": storage.endpoint_url or settings.s3_endpoint_url,
                                      "ca_bundle": storage.ca_bundle or settings.s3_ca_bundle})


def effective_scheduling(scheduling: Scheduling, settings: OperatorSettings, work: str | None) -> Scheduling:
    """The resource's scheduling, each field it leaves out taken from the chart's defaults for `work`."""
    defaults = settings.scheduling.get(work or "") or Scheduling()
    return scheduling.model_copy(update={name: getattr(defaults, name) for name in Scheduling.model_fields
                                         if getattr(scheduling, name) is None})


def storage_env(storage: Storage, settings: OperatorSettings) -> list[dict[str, Any]]:
    """S3 credentials by Secret reference (never by value), or nothing for IRSA."""
    storage = effective_storage(storage, settings)
    env: list[dict[str, Any]] = []
    secret = storage.secret_name or (None if storage.service_account_name else settings.s3_secret)
    if secret:
        env += [
            secret_env("AWS_ACCESS_KEY_ID", secret, "AWS_ACCESS_KEY_ID"),
            secret_env("AWS_SECRET_ACCESS_KEY", secret, "AWS_SECRET_ACCESS_KEY"),
            secret_env("AWS_SESSION_TOKEN", secret, "AWS_SESSION_TOKEN", optional=True),
            secret_env("AWS_DEFAULT_REGION", secret, "AWS_DEFAULT_REGION", optional=True),
        ]
    if storage.endpoint_url:
        env.append(_env("AWS_ENDPOINT_URL", storage.endpoint_url))
    if storage.ca_bundle:
        env.append(_env("AWS_CA_BUNDLE", CA_FILE))
    return env


@dataclass(frozen=True)
class Extras:
    """What a pod gets besides kubetune's own plumbing: the S3 CA bundle, and the resource's `spec.pod`
    (env, envFrom, volumes and mounts, the model cache)."""

    env: list[Manifest]
    env_from: list[Manifest]
    volumes: list[Manifest]
    mounts: list[Manifest]


def extras(resource: Resource, settings: OperatorSettings) -> Extras:
    env: list[Manifest] = []
    volumes: list[Manifest] = []
    mounts: list[Manifest] = []
    ca_bundle = effective_storage(resource.spec.storage, settings).ca_bundle
    if ca_bundle is not None:
        volumes.append({"name": "ca-bundle", "configMap": {
            "name": ca_bundle.config_map_name, "items": [{"key": ca_bundle.key, "path": CA_FILE.rsplit("/", 1)[1]}]}})
        mounts.append({"name": "ca-bundle", "mountPath": CA_DIR, "readOnly": True})
    options: PodOptions | None = getattr(resource.spec, "pod", None)
    if options is None:
        return Extras(env, [], volumes, mounts)
    if options.model_cache is not None:
        cache = options.model_cache
        volumes.append({"name": "model-cache", "persistentVolumeClaim": {"claimName": cache.claim_name,
                                                                         "readOnly": cache.read_only}})
        mounts.append({"name": "model-cache", "mountPath": MODEL_CACHE_PATH, "readOnly": cache.read_only})
        env.append(_env("KUBETUNE_MODEL_CACHE", MODEL_CACHE_PATH))
        if cache.read_only:
            env.append(_env("KUBETUNE_MODEL_CACHE_READ_ONLY", "1"))
    wire = options.to_wire()
    return Extras([*env, *wire["env"]], wire["envFrom"], [*volumes, *wire["volumes"]],
                  [*mounts, *wire["volumeMounts"]])


def pod_env(resource: Resource, settings: OperatorSettings) -> list[dict[str, Any]]:
    """The environment of contracts §3."""
    env = [
        _env("KUBETUNE_KIND", resource.kind_name),
        _env("KUBETUNE_NAMESPACE", namespace_of(resource)),
        _env("KUBETUNE_NAME", resource.metadata.name),
        _env("KUBETUNE_METRICS_PORT", str(METRICS_PORT)),
        _env("KUBETUNE_CACHE_DIR", f"{SCRATCH_DIR}/cache"),
        _env("HF_HOME", f"{SCRATCH_DIR}/hf"),
        _env("TMPDIR", f"{SCRATCH_DIR}/tmp"),
        _env("HOME", f"{SCRATCH_DIR}/home"),
        # vLLM, Triton and torch.compile write caches; the root filesystem is read-only.
        _env("XDG_CACHE_HOME", f"{SCRATCH_DIR}/cache"),
        _env("PYTHONUNBUFFERED", "1"),
    ]
    if settings.progress_base_url:
        base = settings.progress_base_url.rstrip("/")
        env += [
            _env(
                "KUBETUNE_PROGRESS_URL",
                f"{base}/progress/{namespace_of(resource)}/{resource.plural}/{resource.metadata.name}",
            ),
            secret_env("KUBETUNE_PROGRESS_TOKEN", progress_secret_name(resource), "token", optional=True),
        ]
    return env + storage_env(resource.spec.storage, settings)


def compute_resources(cpu: str, memory: str, gpus: int = 0, gpu_resource: str = "nvidia.com/gpu",
                      ephemeral_storage: str | None = None) -> Manifest:
    """Requests equal limits: training pods are Guaranteed, so nothing evicts them for memory first."""
    amounts: dict[str, Any] = {"cpu": cpu, "memory": memory}
    if ephemeral_storage:
        amounts["ephemeral-storage"] = ephemeral_storage
    if gpus:
        amounts[gpu_resource] = gpus
    return {"requests": dict(amounts), "limits": dict(amounts)}


CONTAINER_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": RUN_AS_USER,
    "runAsGroup": RUN_AS_USER,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}

POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": RUN_AS_USER,
    "runAsGroup": RUN_AS_USER,
    "fsGroup": RUN_AS_USER,
    "seccompProfile": {"type": "RuntimeDefault"},
}


class Expanded(str):
    """Text the kubelet is meant to expand: its `$(VAR)` names a variable of the container."""


def literal(text: str) -> str:
    """Text the kubelet passes on as written. It expands `$(VAR)` in command, args and env values
    and reads `$$` as `$`, so every `$` is doubled: a user's `$(HOME)` (in an author, a column name,
    anything) reaches the process as typed, never as the variable's value."""
    return text if isinstance(text, Expanded) else text.replace("$", "$$")


def container(
    name: str,
    image: str,
    command: list[str],
    env: list[dict[str, Any]],
    resources: Manifest,
    mounts: list[dict[str, Any]],
    ports: list[dict[str, Any]] | None = None,
    env_from: list[dict[str, Any]] | None = None,
) -> Manifest:
    """A container whose command and env values are `literal` (but for Expanded parts)."""
    env = [{**entry, "value": literal(entry["value"])} if "value" in entry else entry for entry in env]
    spec: Manifest = {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": [literal(arg) for arg in command],
        "env": env,
        "resources": resources,
        "volumeMounts": mounts,
        "securityContext": dict(CONTAINER_SECURITY),
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if ports:
        spec["ports"] = ports
    if env_from:
        spec["envFrom"] = env_from
    return spec


METRICS_PORTS = [{"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}]


def scratch_volumes(shared_memory: str | None = None, scratch_size: str | None = None) -> tuple[list[Manifest], list[Manifest]]:
    """Writable places on a read-only root: scratch for caches and downloads (at most `scratch_size`,
    what the pod requests as ephemeral-storage), /tmp, and /dev/shm."""
    volumes: list[Manifest] = [
        {"name": "scratch", "emptyDir": {"sizeLimit": scratch_size} if scratch_size else {}},
        {"name": "tmp", "emptyDir": {}},
    ]
    mounts: list[Manifest] = [
        {"name": "scratch", "mountPath": SCRATCH_DIR},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    if shared_memory:
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": shared_memory}})
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    return volumes, mounts


def config_volume(config_map_name: str, mount_path: str = CONFIG_DIR) -> tuple[Manifest, Manifest]:
    return (
        {"name": "config", "configMap": {"name": config_map_name}},
        {"name": "config", "mountPath": mount_path, "readOnly": True},
    )


def pod_spec(
    containers: list[Manifest],
    volumes: list[Manifest],
    scheduling: Scheduling,
    storage: Storage,
    subdomain: str | None = None,
) -> Manifest:
    spec: Manifest = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": dict(POD_SECURITY),
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "enableServiceLinks": False,
        "containers": containers,
        "volumes": volumes,
    }
    if storage.service_account_name:
        spec["serviceAccountName"] = storage.service_account_name
    if subdomain:
        spec["subdomain"] = subdomain
    if scheduling.node_selector:
        spec["nodeSelector"] = dict(scheduling.node_selector)
    tolerations = extended_resource_tolerations(containers)
    tolerations += [t for t in (t.to_wire() for t in scheduling.tolerations or []) if t not in tolerations]
    if tolerations:
        spec["tolerations"] = tolerations
    if scheduling.priority_class_name:
        spec["priorityClassName"] = scheduling.priority_class_name
    if scheduling.affinity:
        spec["affinity"] = dict(scheduling.affinity)
    return spec


STANDARD_RESOURCES = ("cpu", "memory", "ephemeral-storage", "hugepages-")


def extended_resource_tolerations(containers: list[Manifest]) -> list[Manifest]:
    """A pod asking for GPUs (any extended resource) tolerates the taint of that name, as GPU node
    pools carry it (nvidia.com/gpu:NoSchedule) and as the ExtendedResourceToleration admission
    plugin adds where a cluster enables it; elsewhere the pod would never be scheduled."""
    names = sorted({name for c in containers for name in ((c.get("resources") or {}).get("limits") or {})
                    if not name.startswith(STANDARD_RESOURCES)})
    return [{"key": name, "operator": "Exists", "effect": "NoSchedule"} for name in names]


def failure_policy(container_name: str) -> Manifest:
    """Preemptions don't spend the retry budget; bad config or data fails at once; the rest retries."""
    return {
        "rules": [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            {
                "action": "FailJob",
                "onExitCodes": {"containerName": container_name, "operator": "In", "values": sorted(PERMANENT)},
            },
        ]
    }


def job(
    resource: Resource,
    name: str,
    component: str,
    pod: Manifest,
    *,
    backoff_limit: int,
    active_deadline_seconds: int | None = None,
    suspend: bool = False,
    queue_name: str | None = None,
    nodes: int = 1,
) -> Manifest:
    extra_labels = {"kueue.x-k8s.io/queue-name": queue_name} if queue_name else None
    template_labels = labels(resource, component)
    spec: Manifest = {
        "completions": nodes,
        "parallelism": nodes,
        "backoffLimit": backoff_limit,
        # Kueue admits a queued Job by unsuspending it.
        "suspend": bool(suspend or queue_name),
        "podFailurePolicy": failure_policy(pod["containers"][0]["name"]),
        "podReplacementPolicy": "Failed",
        "template": {"metadata": {"labels": template_labels}, "spec": pod},
    }
    if nodes > 1 or component == "train":
        spec["completionMode"] = "Indexed"
    if active_deadline_seconds:
        spec["activeDeadlineSeconds"] = active_deadline_seconds
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(resource, name, component, extra_labels),
        "spec": spec,
    }
