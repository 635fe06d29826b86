"""What the generic offline code needs to know about one kind; each kind's builder module makes its own.

`kubetune render` (builders/graph.py) and `kubetune run` (localrun/runner.py) treat every kind alike
through this description, as the operator's reconcile loop does through handlers/kind.py; the kinds
are enumerated once, in builders/registry.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubetune_operator.api import Resource
from kubetune_operator.builders.inputs import Artifacts, Lookup
from kubetune_operator.builders.settings import OperatorSettings
from kubetune_operator.builders.workload import Manifest


@dataclass(frozen=True)
class Probe:
    """How `kubetune run` measures what a step read, handed to a kind's `rerun_inputs` so that
    builders stay free of I/O: `files(uri)` the content of local files (other URIs as given),
    `model(uri)` a model's files by name, size and mtime, `upstream()` what the steps it waits for
    produced (their fingerprints or artifacts)."""

    files: Callable[[str], Any]
    model: Callable[[str], Any]
    upstream: Callable[[], list[Any]]


def _takes_no_inputs(resource: Any, artifacts_of: Lookup) -> None:
    return None


@dataclass(frozen=True)
class KindBuilder:
    model: type[Resource]
    # The resources it waits for: (kind, name), in its own namespace.
    references: Callable[[Any], list[tuple[type[Resource], str]]]
    # Its children from its resolved inputs: (resource, settings, inputs) -> manifests.
    build: Callable[[Any, OperatorSettings, Any], list[Manifest]]
    # What decides whether `kubetune run` must run it again, besides its spec and its children:
    # (resource, inputs, probe) -> a JSON-able value the step's fingerprint is taken of.
    rerun_inputs: Callable[[Any, Any, Probe], Any]
    # Its inputs from the artifacts of the resources it references (builders/inputs.py).
    resolve_inputs: Callable[[Any, Lookup], Any] = _takes_no_inputs
    # For a kind others take as input, what it produces: predicted by the layout from its output
    # URI (and its resource when known) before it ran, and read from its pod's termination summary.
    predicted_artifacts: Callable[[str, Any], Artifacts] | None = None
    summary_artifacts: Callable[[dict[str, Any]], Artifacts] | None = None
    # Whether `kubetune run --force` makes it start afresh in its output: a trainer reuses a finished
    # run it finds there, which --force must not.
    forced_afresh: bool = False
