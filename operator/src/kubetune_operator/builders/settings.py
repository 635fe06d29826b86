"""What the operator is configured with (docs/contracts.md §10)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from kubetune_operator import __version__

DEFAULT_REGISTRY = "ghcr.io/kubetune"


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
        return cls(
            artifact_root=env.get("KUBETUNE_ARTIFACT_ROOT") or defaults.artifact_root,
            trainer_image=env.get("KUBETUNE_TRAINER_IMAGE") or defaults.trainer_image,
            eval_image=env.get("KUBETUNE_EVAL_IMAGE") or defaults.eval_image,
            operator_image=env.get("KUBETUNE_OPERATOR_IMAGE") or defaults.operator_image,
            progress_base_url=env.get("KUBETUNE_PROGRESS_BASE_URL") or None,
            s3_secret=env.get("KUBETUNE_S3_SECRET") or None,
        )
