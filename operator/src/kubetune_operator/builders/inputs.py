"""What one resource takes from others, in the same terms wherever it comes from.

A FineTuneJob's dataset and start point and an EvalRun's test set and candidates are other
resources' outputs. Each kind resolves them with one pure function (`training.resolve_inputs`,
`evaluation.resolve_inputs`) from a lookup: `artifacts_of(kind, name)` → `Artifacts`. The three
callers differ only in the lookup they hand it: the operator reads statuses (`from_status`),
`kubetune render` predicts the default layout (docs/contracts.md §6) and `kubetune run` reads the
earlier steps' termination summaries (§5). So the three agree by construction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kubetune_operator.api import Resource


@dataclass(frozen=True)
class Artifacts:
    """What a resource produced: its output's `uri` (a dataset's directory, a training's final/),
    a dataset's `fingerprint`, the `type` of a training's final/ (adapter or full, None when not
    known) and its merged/ (`merged_uri`, None when it writes none)."""

    uri: str | None
    fingerprint: str | None = None
    type: str | None = None
    merged_uri: str | None = None

    @classmethod
    def from_status(cls, status: Mapping[str, Any]) -> Artifacts:
        """From a resource's status, as the operator wrote it."""
        artifacts = status.get("artifacts") if isinstance(status.get("artifacts"), Mapping) else {}
        return cls(
            uri=artifacts.get("uri"),
            fingerprint=status.get("fingerprint"),
            type=artifacts.get("type"),
            merged_uri=artifacts.get("mergedUri"),
        )


# (kind, name) → its artifacts; the name is in the namespace of the resource being resolved.
Lookup = Callable[[type[Resource], str], Artifacts]


class InputRefused(Exception):
    """An input that exists but can never serve (a start point that is not an adapter, a merged model
    that is not written): the resource fails with `reason`, whoever resolves it."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message
