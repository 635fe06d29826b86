"""What the operator is configured with (docs/contracts.md §10)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from kubetune_operator import __version__
from kubetune_operator.api.resource import URI_PATTERN, CaBundle, Scheduling, Storage
from kubetune_operator.errors import UserError

DEFAULT_REGISTRY = "ghcr.io/kubetune"


# Something that looks like a URI scheme (`ftp:`, `s3:` with one slash, `C:`): not a local path anyone means.
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def artifact_root_problem(value: str) -> str | None:
    """Why `value` cannot be an artifact root (None when it can): an s3://bucket[/prefix] as the API
    accepts in specs, or a local directory; anything else would become a folder named after it."""
    if value.startswith("s3://"):
        if ".." in value or not re.match(URI_PATTERN, value):
            return (
                f"{value!r} is not an s3://BUCKET[/PREFIX] URI (a bucket of 3-63 lowercase letters, digits, "
                "'.' and '-'; path segments of letters, digits and _.+=@%~-, no '..')"
            )
        return None
    if value.startswith("file://") or not _SCHEME.match(value):
        return None if value.strip() else "is empty"
    return f"{value!r}: unsupported scheme (use s3://BUCKET/PREFIX, file:///PATH or a directory)"


# The kinds of work whose pods take the chart's scheduling defaults (KUBETUNE_POD_DEFAULTS).
WORKS = ("training", "evaluation")


@dataclass(frozen=True)
class OperatorSettings:
    artifact_root: str = "s3://kubetune-artifacts"
    trainer_image: str = f"{DEFAULT_REGISTRY}/trainer:{__version__}"
    eval_image: str = f"{DEFAULT_REGISTRY}/eval:{__version__}"
    operator_image: str = f"{DEFAULT_REGISTRY}/operator:{__version__}"
    progress_base_url: str | None = None
    s3_secret: str | None = None
    # The chart's defaults, which a resource's own fields override: the S3 endpoint and its CA
    # bundle for every pod, and per kind of work (WORKS) the scheduling of its pods.
    s3_endpoint_url: str | None = None
    s3_ca_bundle: CaBundle | None = None
    scheduling: Mapping[str, Scheduling] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> OperatorSettings:
        env = os.environ if env is None else env
        defaults = cls()
        root = env.get("KUBETUNE_ARTIFACT_ROOT")
        problem = artifact_root_problem(root) if root else None
        if problem:
            raise UserError(f"KUBETUNE_ARTIFACT_ROOT: {problem}")
        return cls(
            artifact_root=env.get("KUBETUNE_ARTIFACT_ROOT") or defaults.artifact_root,
            trainer_image=env.get("KUBETUNE_TRAINER_IMAGE") or defaults.trainer_image,
            eval_image=env.get("KUBETUNE_EVAL_IMAGE") or defaults.eval_image,
            operator_image=env.get("KUBETUNE_OPERATOR_IMAGE") or defaults.operator_image,
            progress_base_url=env.get("KUBETUNE_PROGRESS_BASE_URL") or None,
            s3_secret=env.get("KUBETUNE_S3_SECRET") or None,
            **defaults_from_env(env),
        )


def _parsed(model, value: Any, variable: str):
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors())
        raise UserError(f"{variable}: {problems}") from None


def defaults_from_env(env: Mapping[str, str]) -> dict[str, Any]:
    """The chart's pod defaults: KUBETUNE_S3_ENDPOINT_URL, KUBETUNE_S3_CA_BUNDLE (`configmap/key`) and
    KUBETUNE_POD_DEFAULTS (JSON: {"training": Scheduling, "evaluation": Scheduling}); a bad one stops
    the operator at start, naming the variable and field."""
    found: dict[str, Any] = {}
    if env.get("KUBETUNE_S3_ENDPOINT_URL"):
        found["s3_endpoint_url"] = _parsed(Storage, {"endpointUrl": env["KUBETUNE_S3_ENDPOINT_URL"]},
                                           "KUBETUNE_S3_ENDPOINT_URL").endpoint_url
    if env.get("KUBETUNE_S3_CA_BUNDLE"):
        name, _, key = env["KUBETUNE_S3_CA_BUNDLE"].partition("/")
        found["s3_ca_bundle"] = _parsed(CaBundle, {"configMapName": name, **({"key": key} if key else {})},
                                        "KUBETUNE_S3_CA_BUNDLE")
    if env.get("KUBETUNE_POD_DEFAULTS"):
        try:
            document = json.loads(env["KUBETUNE_POD_DEFAULTS"])
        except ValueError as exc:
            raise UserError(f"KUBETUNE_POD_DEFAULTS: not JSON ({exc})") from None
        if not isinstance(document, dict) or set(document) - set(WORKS):
            raise UserError(f"KUBETUNE_POD_DEFAULTS: an object with the keys {', '.join(WORKS)}")
        found["scheduling"] = {work: _parsed(Scheduling, value or {}, f"KUBETUNE_POD_DEFAULTS.{work}")
                               for work, value in document.items()}
    return found
