"""How the operator process runs: its ports (command-line flags) and what it reads from its environment
(docs/contracts.md §10) besides the builders' settings."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from kubetune_operator.errors import UserError

DEFAULT_PROGRESS_PORT = 8080
DEFAULT_METRICS_PORT = 9090
DEFAULT_HEALTH_PORT = 8081
# A status patch per progress event would make every trainer a write load on the API server.
DEFAULT_PROGRESS_PATCH_INTERVAL = 10.0
# The periodic safety-net reconcile of unfinished resources (events drive everything else).
DEFAULT_RESYNC_INTERVAL = 60.0


@dataclass(frozen=True)
class RuntimeSettings:
    progress_key: bytes
    progress_port: int = DEFAULT_PROGRESS_PORT
    metrics_port: int = DEFAULT_METRICS_PORT
    health_port: int = DEFAULT_HEALTH_PORT
    progress_patch_interval: float = DEFAULT_PROGRESS_PATCH_INTERVAL
    resync_interval: float = DEFAULT_RESYNC_INTERVAL

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RuntimeSettings:
        env = os.environ if env is None else env
        key = env.get("KUBETUNE_PROGRESS_KEY", "")
        if len(key) < 16:
            raise UserError(
                "KUBETUNE_PROGRESS_KEY must be set to a secret of at least 16 characters "
                "(the HMAC key of the per-resource progress tokens; the chart creates it)"
            )
        return cls(
            progress_key=key.encode("utf-8"),
            progress_patch_interval=_float(env, "KUBETUNE_PROGRESS_PATCH_INTERVAL", DEFAULT_PROGRESS_PATCH_INTERVAL),
            resync_interval=_float(env, "KUBETUNE_RESYNC_INTERVAL", DEFAULT_RESYNC_INTERVAL),
        )


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    text = env.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"{name}={text!r}: not a number") from None
    if value <= 0:
        raise UserError(f"{name}={value}: must be positive")
    return value
