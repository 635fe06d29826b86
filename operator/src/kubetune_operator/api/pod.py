"""What a FineTuneJob's or EvalRun's pods get besides their command (`spec.pod`): environment from
values, Secrets and ConfigMaps, extra volumes and mounts, and a shared model cache.

Only volume types the restricted Pod Security Standard allows exist here (PVC, ConfigMap, Secret,
emptyDir), and nothing may take the names, paths or variables kubetune's own pod plumbing uses.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field

from kubetune_operator.api.resource import Model, Quantity, cel

# Names and paths kubetune's pods use already (builders/workload.py); a user's may not take them.
RESERVED_VOLUMES = ("scratch", "tmp", "dshm", "config", "record", "git-credentials", "model-cache", "ca-bundle")
RESERVED_PATHS = ("/scratch", "/tmp", "/dev/shm", "/etc/kubetune", "/cache/models", "/etc/kubetune-ca")
MODEL_CACHE_PATH = "/cache/models"

EnvName = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$")]
ObjectName = Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")]
DataKey = Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._A-Za-z0-9]+$")]
VolumeName = Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")]
MountPath = Annotated[str, Field(min_length=2, max_length=512, pattern=r"^/[A-Za-z0-9_./-]*$")]


def _not_reserved(field: str, reserved: tuple[str, ...], what: str) -> dict[str, str]:
    listed = ", ".join(f"'{name}'" for name in reserved)
    return cel(f"!(self.{field} in [{listed}])", f"{what} is one of kubetune's own ({listed}): choose another",
               field_path=f".{field}")


class KeyRef(Model):
    """One key of a Secret or ConfigMap in the resource's namespace."""

    name: ObjectName
    """The Secret's or ConfigMap's name."""

    key: DataKey
    """The key within it."""

    optional: bool = False
    """Start the pod even when the object or key is missing (the variable is then unset)."""


class EnvSource(Model):
    """Where a variable's value comes from."""

    cel_rules: ClassVar = [cel("has(self.secretKeyRef) != has(self.configMapKeyRef)",
                               "set exactly one of secretKeyRef or configMapKeyRef")]

    secret_key_ref: KeyRef | None = None
    """A Secret's key, e.g. HF_TOKEN. The operator passes the reference; it never reads the Secret."""

    config_map_key_ref: KeyRef | None = None
    """A ConfigMap's key."""


class EnvVar(Model):
    """An environment variable of the pods (proxies, HF_TOKEN, an internal CA path, ...)."""

    cel_rules: ClassVar = [
        cel("has(self.value) != has(self.valueFrom)", "set exactly one of value or valueFrom"),
        cel("!self.name.startsWith('KUBETUNE_')", "KUBETUNE_* variables are kubetune's contract with its pods",
            field_path=".name"),
    ]

    name: EnvName
    """Variable name."""

    value: Annotated[str, Field(max_length=4096)] | None = None
    """The value, passed as written: `$(VAR)` is not expanded."""

    value_from: EnvSource | None = None
    """The value from a Secret or ConfigMap key."""


class ObjectRef(Model):
    """A Secret or ConfigMap in the resource's namespace, all of whose keys become variables."""

    name: ObjectName
    """Its name."""

    optional: bool = False
    """Start the pod even when it is missing."""


class EnvFrom(Model):
    """Every key of a Secret or ConfigMap as a variable."""

    cel_rules: ClassVar = [cel("has(self.secretRef) != has(self.configMapRef)",
                               "set exactly one of secretRef or configMapRef")]

    secret_ref: ObjectRef | None = None
    """A Secret."""

    config_map_ref: ObjectRef | None = None
    """A ConfigMap."""

    prefix: Annotated[str, Field(max_length=64, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] | None = None
    """Prepended to every key."""


class ClaimSource(Model):
    """A PersistentVolumeClaim in the resource's namespace."""

    claim_name: ObjectName
    """The claim."""

    read_only: bool = False
    """Mount it read-only."""


class ConfigMapSource(Model):
    """A ConfigMap's keys as files."""

    name: ObjectName
    """The ConfigMap."""

    optional: bool = False
    """Start the pod even when it is missing."""


class SecretSource(Model):
    """A Secret's keys as files (mode 0400)."""

    secret_name: ObjectName
    """The Secret."""

    optional: bool = False
    """Start the pod even when it is missing."""


class EmptyDirSource(Model):
    """Scratch space of the pod's own."""

    size_limit: Quantity | None = None
    """Its size limit."""


class Volume(Model):
    """An extra volume of the pods: one of the types the restricted Pod Security Standard allows."""

    cel_rules: ClassVar = [
        cel("[has(self.persistentVolumeClaim), has(self.configMap), has(self.secret), has(self.emptyDir)]"
            ".filter(x, x).size() == 1",
            "set exactly one of persistentVolumeClaim, configMap, secret or emptyDir"),
        _not_reserved("name", RESERVED_VOLUMES, "a volume name"),
    ]

    name: VolumeName
    """Volume name, as volumeMounts refer to it."""

    persistent_volume_claim: ClaimSource | None = None
    """A PVC, e.g. a ReadWriteMany cache of datasets or models."""

    config_map: ConfigMapSource | None = None
    """A ConfigMap's keys as files (an internal CA bundle, say)."""

    secret: SecretSource | None = None
    """A Secret's keys as files."""

    empty_dir: EmptyDirSource | None = None
    """An empty directory of the pod's own."""


class VolumeMount(Model):
    """Where a volume appears in the container."""

    cel_rules: ClassVar = [
        cel("!self.mountPath.contains('..')", "mountPath must not contain '..'", field_path=".mountPath"),
        cel("![" + ", ".join(f"'{p}'" for p in RESERVED_PATHS) + "].exists(p, self.mountPath == p || "
            "self.mountPath.startsWith(p + '/'))",
            "mountPath lies in a place kubetune's pods use (" + ", ".join(RESERVED_PATHS) + ")",
            field_path=".mountPath"),
    ]

    name: VolumeName
    """The volume (from volumes)."""

    mount_path: MountPath
    """Absolute path in the container."""

    read_only: bool = False
    """Mount it read-only."""

    sub_path: Annotated[str, Field(max_length=253, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*$")] | None = None
    """A path inside the volume to mount instead of its root."""


class ModelCache(Model):
    """A PersistentVolumeClaim, ReadWriteMany, shared by the pods as a cache of s3:// models: a model
    already there is read from it; one missing is downloaded into it once (the other pods wait for
    that download) when the claim is writable, else into the pod's scratch."""

    claim_name: ObjectName
    """The claim (ReadWriteMany, in the resource's namespace)."""

    read_only: bool = False
    """Only read from it (another process fills it)."""


class PodOptions(Model):
    """Environment, volumes and a model cache for the pods."""

    cel_rules: ClassVar = [
        cel("self.volumeMounts.all(m, self.volumes.exists(v, v.name == m.name))",
            "every volumeMount names one of the volumes", field_path=".volumeMounts"),
        cel("self.volumes.all(v, self.volumes.exists_one(w, w.name == v.name))", "volume names must be unique",
            field_path=".volumes"),
    ]

    env: Annotated[list[EnvVar], Field(max_length=64)] = []
    """Variables, after kubetune's own (HF_TOKEN, HTTPS_PROXY, NO_PROXY, REQUESTS_CA_BUNDLE, ...)."""

    env_from: Annotated[list[EnvFrom], Field(max_length=16)] = []
    """Secrets and ConfigMaps whose every key becomes a variable."""

    volumes: Annotated[list[Volume], Field(max_length=16)] = []
    """Extra volumes: persistentVolumeClaim, configMap, secret or emptyDir."""

    volume_mounts: Annotated[list[VolumeMount], Field(max_length=16)] = []
    """Where the extra volumes appear in the container."""

    model_cache: ModelCache | None = None
    """A shared cache of s3:// models, mounted at /cache/models: pods read a model from it when it is there."""
