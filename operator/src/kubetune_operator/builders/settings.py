"""What the operator is configured with (docs/contracts.md §10)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from kubetune_operator import __version__
from kubetune_operator.api.resource import URI_PATTERN
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


@dataclass(frozen=True)
class OperatorSettings:
    artifact_root: str = "s3://kubetune-artifacts"
    trainer_image: str = f"{DEFAULT_REGISTRY}/trainer:{__version__}"
    eval_image: str = f"{DEFAULT_REGISTRY}/eval:{__version__}"
    operator_image: str = f"{DEFAULT_REGISTRY}/operator:{__version__}"
    progress_base_url: str | None = None
    s3_secret: str | None = None

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
        )
