"""What every kind's model is made of: the `Resource` and `Model` bases, metadata, the status every
kind has with its conditions, and the field types the kinds share (names, URIs, storage, scheduling).

Every field carries a description (it becomes `kubectl explain` text) and every string a bound,
so that the generated CRDs are structural, cheap for CEL and strict about what reaches a pod's argv.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "kubetune.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# Children are named `<name>-train`, `<name>-train-config`, `<name>-progress`, and Job pod names add
# an index and a random suffix; label values stop at 63 characters. 48 leaves room for all of them.
MAX_NAME_LENGTH = 48
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# A namespace is a DNS-1123 label, as the API server requires; it becomes a path segment of the
# artifact layout and of `kubetune run`'s work folders, so nothing else may reach it.
NAMESPACE_PATTERN = NAME_PATTERN
MAX_NAMESPACE_LENGTH = 63

# A path segment: no leading dot or dash (so no `..`, no option-like `-x`), no shell metacharacters.
_SEGMENT = r"[A-Za-z0-9_+=@%~][A-Za-z0-9_.+=@%~-]*"
_S3 = r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/" + _SEGMENT + r")*/?"
_FILE = r"file://(/|\./)?" + _SEGMENT + r"(/" + _SEGMENT + r")*/?"
_HF = r"hf://[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*"
# Globs are allowed in dataset sources only.
_GLOB_SEGMENT = r"[A-Za-z0-9_+=@%~*?\[\]][A-Za-z0-9_.+=@%~*?\[\]-]*"
_S3_GLOB = r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/" + _GLOB_SEGMENT + r")*/?"
_FILE_GLOB = r"file://(/|\./)?" + _GLOB_SEGMENT + r"(/" + _GLOB_SEGMENT + r")*/?"

URI_PATTERN = rf"^({_S3}|{_FILE})$"
MODEL_URI_PATTERN = rf"^({_S3}|{_FILE}|{_HF})$"
SOURCE_URI_PATTERN = rf"^({_S3_GLOB}|{_FILE_GLOB})$"
NO_DOT_DOT = {"rule": "!self.contains('..')", "message": "must not contain '..'"}
# A file name cannot hold a NUL byte, and a file:// URI decodes %00 into one.
NO_NUL = {"rule": "!self.contains('%00')", "message": "must not contain %00 (a NUL byte)"}
# `file://~/x` would be read from whatever home directory the pod has (or fail for `~user`).
NO_HOME = {"rule": "!self.startsWith('file://~')", "message": "a file:// path cannot start with ~ (a pod has no home of yours)"}

MAX_URI_LENGTH = 1024
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti)?$"
LABEL_KEY_PATTERN = r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
FIELD_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.]*$"

ResourceName = Annotated[
    str,
    Field(min_length=1, max_length=MAX_NAME_LENGTH, pattern=NAME_PATTERN),
]


def _uri(pattern: str) -> Any:
    """A URI field: `pattern`'s schemes, and no `..`, `~` home or NUL byte, checked by the API server."""
    return Annotated[
        str,
        Field(
            max_length=MAX_URI_LENGTH,
            pattern=pattern,
            json_schema_extra={"x-kubernetes-validations": [NO_DOT_DOT, NO_HOME, NO_NUL]},
        ),
    ]


Uri = _uri(URI_PATTERN)
ModelUri = _uri(MODEL_URI_PATTERN)
SourceUri = _uri(SOURCE_URI_PATTERN)
Quantity = Annotated[str, Field(max_length=32, pattern=QUANTITY_PATTERN)]
FieldName = Annotated[str, Field(min_length=1, max_length=63, pattern=FIELD_PATTERN)]
GpuResourceName = Annotated[
    str, Field(max_length=128, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
]
ImageRef = Annotated[str, Field(max_length=512, pattern=r"^[a-z0-9][a-z0-9./_:@-]*$")]


def _compiles(pattern: str) -> str:
    # The trainer and the evaluator compile patterns with Python's re (lookbehind and all); the API
    # server's CEL knows only RE2, so this check runs where the operator reads the spec, before any
    # Job exists.
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"not a valid (Python) regular expression: {exc}") from None
    return pattern


Regex = Annotated[str, Field(min_length=1, max_length=512), AfterValidator(_compiles)]


def cel(rule: str, message: str, field_path: str | None = None, reason: str | None = None) -> dict[str, str]:
    """One `x-kubernetes-validations` entry."""
    entry = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    if reason:
        entry["reason"] = reason
    return entry


def immutable(field: str) -> dict[str, str]:
    """A transition rule that keeps `field` as it was once set (and forbids adding or removing it)."""
    return cel(
        f"has(self.{field}) == has(oldSelf.{field}) && (!has(self.{field}) || self.{field} == oldSelf.{field})",
        f"{field} is immutable: the work started with it, and a change would not reach it; "
        "create a new resource instead",
        field_path=f".{field}",
    )


def immutable_fields(spec: type[BaseModel], mutable: tuple[str, ...] = ()) -> list[dict[str, str]]:
    """Transition rules for every field of a spec but `mutable` (snake_case names): once its Job exists,
    the operator applies no other change, so the API refuses one rather than ignoring it."""
    return [immutable(to_camel(name)) for name in spec.model_fields if name not in mutable]


class Model(BaseModel):
    """Base of every API object: camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
        validate_default=True,
    )

    # CEL rules attached to this object's schema; subclasses override.
    cel_rules: ClassVar[list[dict[str, str]]] = []

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema, handler):
        schema = handler(core_schema)
        schema = handler.resolve_ref_schema(schema)
        if cls.cel_rules:
            schema["x-kubernetes-validations"] = list(cls.cel_rules)
        return schema

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class CaBundle(Model):
    """A PEM certificate bundle in a ConfigMap of the resource's namespace."""

    config_map_name: ResourceName
    """The ConfigMap."""

    key: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._A-Za-z0-9]+$")] = "ca.crt"
    """The key holding the bundle."""


class Storage(Model):
    """How pods reach the artifact store. Secret values never appear in a spec, only names."""

    cel_rules: ClassVar = [
        cel(
            "!(has(self.secretName) && has(self.serviceAccountName))",
            "set either secretName or serviceAccountName, not both",
        )
    ]

    secret_name: ResourceName | None = None
    """Secret in this namespace with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY keys (and optionally
    AWS_SESSION_TOKEN), passed to pods by secretKeyRef. Default: the operator's configured Secret."""

    service_account_name: ResourceName | None = None
    """Service account the pods run as, for IRSA / workload identity. Its token is mounted only
    through the projected web-identity volume that the identity webhook adds."""

    endpoint_url: Annotated[str, Field(max_length=256, pattern=r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?/?$")] | None = (
        None
    )
    """S3-compatible endpoint (MinIO, Ceph RGW); sets AWS_ENDPOINT_URL in pods."""

    ca_bundle: CaBundle | None = None
    """A ConfigMap key holding the PEM bundle the S3 endpoint's certificate chains to (an internal CA):
    mounted into the pods, with AWS_CA_BUNDLE pointing at it."""


class Toleration(Model):
    """A Kubernetes toleration, copied into the pod spec."""

    # The pod validation rules for tolerations: broken here, the Job would be refused at creation.
    cel_rules: ClassVar = [
        cel("has(self.key) || self.operator == 'Exists'", "a toleration without key needs operator Exists",
            field_path=".operator"),
        cel("self.operator != 'Exists' || !has(self.value) || self.value == ''",
            "operator Exists matches any value: leave value out", field_path=".value"),
        cel("!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
            "tolerationSeconds needs effect NoExecute", field_path=".tolerationSeconds"),
    ]

    key: Annotated[str, Field(max_length=253, pattern=LABEL_KEY_PATTERN)] | None = None
    """Taint key the toleration applies to; empty with operator Exists matches all taints."""

    operator: Literal["Exists", "Equal"] = "Equal"
    """Equal matches key and value; Exists matches any value."""

    value: Annotated[str, Field(max_length=63, pattern=r"^[A-Za-z0-9_.-]*$")] | None = None
    """Taint value to match with operator Equal."""

    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect to match; empty matches all effects."""

    toleration_seconds: Annotated[int, Field(ge=0, le=86400)] | None = None
    """For NoExecute: how long the pod stays bound after the taint appears."""


LabelMap = Annotated[
    dict[
        Annotated[str, Field(max_length=253, pattern=LABEL_KEY_PATTERN)],
        Annotated[str, Field(max_length=63, pattern=r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")],
    ],
    Field(max_length=32),
]


class Scheduling(Model):
    """Where pods may run. Only these fields reach the pod spec."""

    node_selector: LabelMap | None = None
    """Node labels the pods require, e.g. {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}."""

    tolerations: Annotated[list[Toleration], Field(max_length=16)] | None = None
    """Tolerations for tainted GPU nodes."""

    priority_class_name: ResourceName | None = None
    """PriorityClass of the pods."""

    affinity: dict[str, Any] | None = None
    """A Kubernetes Affinity (nodeAffinity, podAffinity, podAntiAffinity), copied into the pod spec as
    written; the API server checks it when the Job is created."""


class Condition(Model):
    """A status condition, as metav1.Condition."""

    type: Annotated[str, Field(min_length=1, max_length=64)]
    """Condition type: Ready, Reconciling and Stalled (kstatus: done, under way, stuck until the spec or an input
    changes), and the kind's own, e.g. DatasetReady, JobCreated, Suspended, Succeeded, Failed, GatesPassed."""

    status: Literal["True", "False", "Unknown"]
    """Whether the condition holds."""

    reason: Annotated[str, Field(max_length=128)] | None = None
    """CamelCase machine-readable reason, e.g. WaitingForDataset, BadConfig."""

    message: Annotated[str, Field(max_length=4096)] | None = None
    """Human-readable explanation."""

    last_transition_time: Annotated[str, Field(max_length=64)] | None = None
    """When the status last changed (RFC 3339)."""

    observed_generation: int | None = None
    """metadata.generation this condition was computed for."""


Phase = Literal["Pending", "Waiting", "Suspended", "Running", "Succeeded", "Failed"]


class ObjectMeta(Model):
    """The parts of metadata that kubetune reads; the API server owns the rest."""

    model_config = ConfigDict(extra="allow", alias_generator=to_camel, populate_by_name=True)

    name: Annotated[str, Field(max_length=253)]
    """Resource name."""

    namespace: Annotated[str, Field(min_length=1, max_length=MAX_NAMESPACE_LENGTH, pattern=NAMESPACE_PATTERN)] | None = (
        None
    )
    """Namespace of the resource (a DNS-1123 label)."""

    uid: str | None = None
    """Unique ID assigned by the API server."""

    generation: int | None = None
    """Spec generation, bumped by the API server on every spec change."""

    labels: dict[str, str] | None = None
    """Labels."""

    annotations: dict[str, str] | None = None
    """Annotations."""


class StatusBase(Model):
    """Fields every kind's status has."""

    phase: Phase | None = None
    """Pending (accepted), Waiting (for inputs), Suspended, Running, Succeeded or Failed."""

    conditions: Annotated[
        list[Condition],
        # One entry per type, merged by type under server-side apply.
        Field(max_length=16, json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}),
    ] | None = None
    """Latest observations of the resource's state, one per type. Ready is True once the work succeeded
    (`kubectl wait --for=condition=Ready`); Reconciling is True while it is under way; Stalled is True when it
    failed or waits for an input that failed."""

    observed_generation: int | None = None
    """metadata.generation the status was computed for."""

    start_time: Annotated[str, Field(max_length=64)] | None = None
    """When the work's first pod started (RFC 3339)."""

    completion_time: Annotated[str, Field(max_length=64)] | None = None
    """When the work finished (RFC 3339)."""

    message: Annotated[str, Field(max_length=4096)] | None = None
    """A one-line summary of the current state, e.g. why it failed."""


class Resource(Model):
    """A kubetune resource: apiVersion, kind, metadata, spec, status."""

    cel_rules: ClassVar = [
        cel(
            f"size(self.metadata.name) <= {MAX_NAME_LENGTH}",
            # No fieldPath: the API server accepts only paths into the schema, and metadata has none.
            f"metadata.name must be at most {MAX_NAME_LENGTH} characters (children add suffixes)",
        ),
        cel(
            f"self.metadata.name.matches('{NAME_PATTERN}')",
            # Kubernetes allows dots in names of custom resources; references and pod hostnames do not.
            "metadata.name must be lowercase letters, digits and '-' (no '.'), as other resources refer to it",
        ),
    ]

    kind_name: ClassVar[str]
    plural: ClassVar[str]
    singular: ClassVar[str]
    short_names: ClassVar[list[str]]
    description: ClassVar[str]
    printer_columns: ClassVar[list[dict[str, Any]]]

    api_version: Literal["kubetune.dev/v1alpha1"] = API_VERSION
    """kubetune.dev/v1alpha1."""

    kind: str
    """The resource kind."""

    metadata: ObjectMeta
    """Standard object metadata."""

    @classmethod
    def status_model(cls) -> type[StatusBase]:
        """The kind's status model (its `status` field's type)."""
        return next(t for t in get_args(cls.model_fields["status"].annotation) if t is not type(None))
