"""What every handler shares in one operator process: the API client, settings, metrics and memory.

The memory here is only an optimisation and a source of metrics: every reconcile reads the
resource and its children from the API server, so a restarted operator (which has none of it)
reaches the same decisions.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from kubetune_operator.builders.settings import OperatorSettings
from kubetune_operator.observability.metrics import OperatorMetrics
from kubetune_operator.runtime.kube import KubeApi, ResourceKey
from kubetune_operator.runtime.progress import ProgressPatcher
from kubetune_operator.runtime.settings import RuntimeSettings


class KeyedLocks:
    """One asyncio lock per resource, so a resource's reconciles never overlap."""

    def __init__(self) -> None:
        self._locks: dict[ResourceKey, asyncio.Lock] = {}
        self._users: Counter[ResourceKey] = Counter()

    @asynccontextmanager
    async def hold(self, key: ResourceKey):
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._users[key] += 1
        try:
            async with lock:
                yield
        finally:
            self._users[key] -= 1
            if not self._users[key]:
                # Nobody waits: forget it, so the table stays as large as the work in flight.
                del self._users[key]
                self._locks.pop(key, None)


class PhaseBook:
    """The last phase seen for every resource: the `kubetune_resources` gauge and the resync list."""

    def __init__(self) -> None:
        self._phases: dict[ResourceKey, str] = {}

    def observe(self, key: ResourceKey, phase: str | None) -> bool:
        """Record a phase; True when it differs from the one seen before (or none was)."""
        phase = phase or "Pending"
        changed = self._phases.get(key) != phase
        self._phases[key] = phase
        return changed

    def forget(self, key: ResourceKey) -> None:
        self._phases.pop(key, None)

    def counts(self, plural: str) -> dict[str, int]:
        return dict(Counter(phase for (kind, _, _), phase in self._phases.items() if kind == plural))

    def unfinished(self) -> Iterator[ResourceKey]:
        yield from [key for key, phase in self._phases.items() if phase not in ("Succeeded", "Failed")]


class OwnWrites:
    """The resourceVersion of the last write this operator made to each object: the watch event
    that write causes carries it, and reconciling on it would only find what was just written."""

    def __init__(self) -> None:
        self._versions: dict[ResourceKey, str] = {}

    def record(self, key: ResourceKey, written: dict | None) -> None:
        version = ((written or {}).get("metadata") or {}).get("resourceVersion")
        if version:
            self._versions[key] = version

    def is_echo(self, key: ResourceKey, body: dict) -> bool:
        version = (body.get("metadata") or {}).get("resourceVersion")
        return version is not None and self._versions.get(key) == version

    def forget(self, key: ResourceKey) -> None:
        self._versions.pop(key, None)


@dataclass
class Runtime:
    api: KubeApi
    operator_settings: OperatorSettings
    settings: RuntimeSettings
    metrics: OperatorMetrics
    locks: KeyedLocks = field(default_factory=KeyedLocks)
    phases: PhaseBook = field(default_factory=PhaseBook)
    own_writes: OwnWrites = field(default_factory=OwnWrites)
    progress: ProgressPatcher = field(init=False)

    def __post_init__(self) -> None:
        self.progress = ProgressPatcher(self.api, self.metrics, self.settings.progress_patch_interval)
