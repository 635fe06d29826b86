"""`kubetune run`: the cluster's work on one machine, from the very same YAML.

Documents are checked against the CRD schemas, ordered by their references, rendered by the
operator's builders, and each Job's pod runs as a local process (localrun.pod) with the env and
config files it would get in a cluster. Inputs are resolved from what earlier steps actually
produced (their termination summaries), as the operator resolves them from statuses. A step
whose spec and inputs are unchanged since its last success is skipped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubetune_operator.api import Resource
from kubetune_operator.builders import graph, workload
from kubetune_operator.builders.inputs import Artifacts, InputRefused, Lookup
from kubetune_operator.builders.kind import Probe
from kubetune_operator.builders.registry import builder_of
from kubetune_operator.builders.settings import OperatorSettings
from kubetune_operator.errors import UserError, shorten
from kubetune_operator.exitcodes import reason
from kubetune_operator.localrun import pod as local_pod
from kubetune_operator.localrun.locks import Locks
from kubetune_operator.redact import redact

STATE_VERSION = 1
# Taken from this machine's environment into every local pod: storage credentials and hub mode,
# the GPUs to use, and how the CPU's numeric libraries run (ATen's kernel ISA, MKL's code path,
# OpenMP/oneDNN threads), which on a cluster the node and the image decide.
HOST_ENV_PREFIXES = (
    # Credentials come from this machine's environment, as a pod gets them from Secrets: S3, trackers.
    "AWS_", "MLFLOW_", "WANDB_", "HF_HUB_OFFLINE", "CUDA_VISIBLE",
    "ATEN_CPU_CAPABILITY", "MKL_", "OMP_", "KMP_", "DNNL_", "ONEDNN_", "OPENBLAS_",
)
# Written into a local output that `kubetune run` creates: only such a folder may `--force` retrain into
# (the trainer then replaces what is there); a folder kubetune did not create is never touched.
OUTPUT_MARKER = ".kubetune-output"
# Tells the trainer to reuse neither a finished run nor checkpoints (contracts §3); the trainer drops
# them only once its dataset and base model resolve.
AFRESH_ENV = "KUBETUNE_TRAIN_AFRESH"
OUTPUT_LOCK = ".kubetune-lock"
# kubetune's own files in an output: not part of its content (the lock holds a PID).
CONTROL_FILES = (OUTPUT_MARKER, OUTPUT_LOCK)
# Launcher flags that only make sense across several nodes; locally everything is one node.
_MULTI_NODE_FLAGS = ("--node-rank", "--master-addr", "--master-port")


@dataclass
class StepResult:
    resource: Resource
    phase: str  # Succeeded, Failed, Skipped (up to date), Blocked (an input failed)
    duration: float = 0.0
    summary: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    log_tail: str = ""
    interrupted: bool = False  # stopped by Ctrl-C: the run goes no further

    @property
    def ok(self) -> bool:
        return self.phase in {"Succeeded", "Skipped"}


def collapse_launch(argv: list[str], gpus: int) -> list[str]:
    """`kubetune-trainer train --nnodes N --nproc-per-node G ...` → one node with this machine's GPUs."""
    if "--nproc-per-node" not in " ".join(argv):
        return argv
    kept: list[str] = []
    skip_next = False
    for arg in argv:
        if skip_next:
            skip_next = False
            continue
        name = arg.split("=", 1)[0]
        if name in (*_MULTI_NODE_FLAGS, "--nnodes", "--nproc-per-node"):
            skip_next = "=" not in arg
            continue
        kept.append(arg)
    if gpus > 1:
        kept += ["--nnodes=1", f"--nproc-per-node={gpus}"]
    return kept


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _file_fingerprint(uri: str) -> Any:
    """Content hashes of local files under a file:// URI (glob, file or directory); URIs as given otherwise.

    S3 inputs are identified by URI only: a local run does not list buckets to decide what to skip.
    """
    if not uri.startswith("file://"):
        return uri
    import glob

    path = uri[len("file://") :]
    matches = sorted(glob.glob(path, recursive=True)) or [path]
    files = []
    for match in matches:
        target = Path(match)
        candidates = sorted(p for p in target.rglob("*") if p.is_file()) if target.is_dir() else [target]
        for item in candidates:
            if item.is_file() and item.name not in CONTROL_FILES:
                files.append((str(item), hashlib.sha256(item.read_bytes()).hexdigest()))
    return files


def _model_fingerprint(uri: str) -> Any:
    """Models are big: name, size and mtime of each file tell a changed model from the same one."""
    if not uri.startswith("file://"):
        return uri
    root = Path(uri[len("file://") :])
    if not root.is_dir():
        return uri
    return [
        (str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in CONTROL_FILES
    ]


def absolute_file_uris(resource: Resource, base: Path) -> Resource:
    """`file://./x` and `file://x` in a spec name paths relative to the directory `kubetune run` runs in;
    pods run elsewhere, so they get absolute paths."""

    def fix(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: fix(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fix(v) for v in value]
        if isinstance(value, str) and value.startswith("file://") and not value.startswith("file:///"):
            return "file://" + os.path.abspath(base / value[len("file://") :])
        return value

    wire = resource.model_dump(by_alias=True, exclude_none=True, mode="json")
    wire["spec"] = fix(wire["spec"])
    try:
        return type(resource).model_validate(wire)
    except ValueError as exc:
        raise UserError(
            f"{resource.kind_name} {resource.metadata.name}: a relative file:// URI becomes an absolute path "
            f"under {base} that kubetune cannot use ({exc}); run from a directory whose path has only "
            "letters, digits and _.+=@%~- in it, or give absolute URIs"
        ) from exc


def without_cluster_plumbing(resource: Resource) -> Resource:
    """The resource without what only a cluster has: `spec.pod` (Secrets, ConfigMaps and claims in its
    namespace) and the S3 CA bundle's ConfigMap. Locally the host's own variables (AWS_*, HF_HUB_OFFLINE,
    ...) stand in, and models are downloaded into the work folder."""
    spec = resource.spec
    changes: dict[str, Any] = {}
    if "pod" in type(spec).model_fields and spec.pod != type(spec).model_fields["pod"].default:
        changes["pod"] = type(spec).model_fields["pod"].default
    if spec.storage.ca_bundle is not None:
        changes["storage"] = spec.storage.model_copy(update={"ca_bundle": None})
    if not changes:
        return resource
    return resource.model_copy(update={"spec": spec.model_copy(update=changes)})


def inside(root: Path, *parts: str) -> Path:
    """root/parts..., refused unless it stays under root: names are validated DNS labels, and this
    keeps a path built from one from ever reaching outside `--workdir` should that slip."""
    path = Path(os.path.normpath(root.joinpath(*parts)))
    if any(not part or part in (".", "..") or "/" in part for part in parts) or not path.is_relative_to(root):
        raise UserError(f"{'/'.join(parts)!r} would leave {root}: names must be DNS-1123 labels")
    return path


def _stop(process: local_pod.LocalContainer) -> tuple[local_pod.PodResult, bool]:
    """SIGTERM, as a preemption: a trainer writes a checkpoint and the next run resumes from it.
    A second Ctrl-C means the user will not wait for that: SIGKILL. Nothing is left running.
    Returns the result and whether it was killed so."""
    process.signal(signal.SIGTERM)
    killed = False
    while True:
        try:
            return process.wait(), killed
        except KeyboardInterrupt:
            process.signal(signal.SIGKILL)
            killed = True


# How much of a step's own error a runner message quotes (the whole is in its summary and log).
MESSAGE_CHARS = 1000


def failure_message(outcome: local_pod.PodResult, summary: dict[str, Any], interrupted: bool, killed: bool) -> str:
    """Why a step failed, in one line: its own error when it wrote one, else what its exit code says."""
    code = outcome.exit_code
    signum = code - 128 if 128 < code < 128 + signal.NSIG else None
    error = str(summary.get("error") or "")
    if signum == signal.SIGKILL:
        label = "Killed"
        why = "killed by a second interrupt" if killed else "killed by SIGKILL (out of memory?)"
    elif signum is not None:
        name = signal.Signals(signum).name if signum in signal.valid_signals() else f"signal {signum}"
        label = "Terminated" if signum == signal.SIGTERM else f"Killed by {name}"
        if error:
            why = error
        elif summary:
            why = f"stopped by {name} after it wrote its summary"
        else:
            why = f"stopped by {name} before it wrote a summary"
    else:
        label = reason(code)
        # Without a JSON summary the message is the log's tail (FallbackToLogsOnError), which may
        # start mid-line: its last line says most.
        lines = [line for line in outcome.termination_message.splitlines() if line.strip()]
        why = error or (f"last line of its log: {lines[-1].strip()}" if lines and not summary else "no message")
    return f"{'interrupted; ' if interrupted else ''}{label} (exit {code}): {shorten(why, MESSAGE_CHARS)}"


class LocalRunner:
    def __init__(
        self,
        artifacts: str,
        workdir: Path,
        force: bool = False,
        gpus: int | None = None,
        on_event: Callable[[Resource, dict[str, Any]], None] | None = None,
    ):
        self.settings = OperatorSettings(artifact_root=artifacts.rstrip("/"))
        self.workdir = workdir
        self.force = force
        self.gpus = local_pod.local_gpu_count() if gpus is None else gpus
        self.on_event = on_event or (lambda resource, event: None)
        self.state_file = workdir / "state.json"
        self.results: dict[tuple, StepResult] = {}
        self.locks = Locks()

    # -- state: what succeeded, with which inputs ------------------------------------------------
    def _load_state(self) -> dict[str, Any]:
        try:
            state = json.loads(self.state_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return {}
        return state.get("steps", {}) if state.get("version") == STATE_VERSION else {}

    def _save_state(self, steps: dict[str, Any]) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"version": STATE_VERSION, "steps": steps}, indent=2), encoding="utf-8")
        os.replace(tmp, self.state_file)

    @staticmethod
    def _state_key(resource: Resource, artifact_root: str) -> str:
        return f"{artifact_root}|{resource.kind_name}|{workload.namespace_of(resource)}|{resource.metadata.name}"

    # -- inputs, from what earlier steps produced ------------------------------------------------
    def _summary_of(self, kind: str, resource: Resource, name: str) -> dict[str, Any]:
        result = self.results[(kind, workload.namespace_of(resource), name)]
        return result.summary

    def _artifacts_of(self, resource: Resource) -> Lookup:
        """The lookup for the input resolvers: what the earlier steps' summaries say they produced."""

        def artifacts_of(kind: type[Resource], name: str) -> Artifacts:
            return builder_of(kind).summary_artifacts(self._summary_of(kind.kind_name, resource, name))

        return artifacts_of

    def _inputs(self, resource: Resource) -> Any:
        try:
            return builder_of(type(resource)).resolve_inputs(resource, self._artifacts_of(resource))
        except InputRefused as refused:
            raise UserError(f"{resource.kind_name} {resource.metadata.name}: {refused.message}") from refused

    def _probe(self, resource: Resource) -> Probe:
        def upstream() -> list[Any]:
            summaries = [self._summary_of(kind, resource, name) for kind, _, name in graph.references(resource)]
            return [u.get("fingerprint") or u.get("artifact") for u in summaries]

        return Probe(files=_file_fingerprint, model=_model_fingerprint, upstream=upstream)

    def _children(self, resource: Resource) -> tuple[list[dict[str, Any]], Any]:
        """The manifests to run and the inputs that decide whether they must run again."""
        kind = builder_of(type(resource))
        inputs = self._inputs(resource)
        return kind.build(resource, self.settings, inputs), kind.rerun_inputs(resource, inputs, self._probe(resource))

    # -- running one step ------------------------------------------------------------------------
    def _local_output(self, resource: Resource) -> Path | None:
        output = workload.output_uri(resource, self.settings)
        return Path(output[len("file://") :]) if output.startswith("file://") else None

    def _claim_output(self, resource: Resource) -> None:
        """Mark a local output that kubetune creates now (it is missing or empty) as kubetune's own, and lock it."""
        path = self._local_output(resource)
        if path is None:
            return
        if path.exists() and not path.is_dir():
            raise UserError(f"{resource.kind_name} {resource.metadata.name}: output {path} is not a directory")
        if not path.exists() or not any(path.iterdir()):
            path.mkdir(parents=True, exist_ok=True)
            owner = {"kind": resource.kind_name, "namespace": workload.namespace_of(resource), "name": resource.metadata.name}
            (path / OUTPUT_MARKER).write_text(json.dumps(owner) + "\n", encoding="utf-8")
        self.locks.take(
            path / OUTPUT_LOCK,
            f"output {path} of {resource.kind_name} {resource.metadata.name}",
            "two runs writing one output would mix their files: wait for it, or give this one another --artifacts",
        )

    def _refusal(self, resource: Resource) -> str | None:
        """Why `--force` may not retrain into this output: a non-empty local folder kubetune did not create."""
        if not (self.force and builder_of(type(resource)).forced_afresh):
            return None
        path = self._local_output(resource)
        if path is None or not path.exists() or (path / OUTPUT_MARKER).is_file():
            return None
        if path.is_dir() and not any(path.iterdir()):
            return None
        return (
            f"--force: {path} was not created by kubetune (it has no {OUTPUT_MARKER} marker), so it is left "
            "alone; delete it yourself or give spec.output.uri a new or empty folder"
        )

    def _run_job(
        self, resource: Resource, manifests: list[dict[str, Any]], env: dict[str, str] | None = None
    ) -> StepResult:
        config_maps = {m["metadata"]["name"]: m["data"] for m in manifests if m["kind"] == "ConfigMap"}
        (job,) = [m for m in manifests if m["kind"] == "Job"]
        pod_spec = json.loads(json.dumps(job["spec"]["template"]["spec"]))
        container = pod_spec["containers"][0]
        # Credentials come from this machine's environment (the standard AWS chain), not Secrets.
        container["env"] = [e for e in container.get("env", []) if "secretKeyRef" not in e.get("valueFrom", {})]
        container["command"] = collapse_launch(container["command"], self.gpus)
        step_dir = inside(self.workdir, "pods", workload.namespace_of(resource), resource.plural, resource.metadata.name)
        shutil.rmtree(step_dir, ignore_errors=True)
        progress_file = step_dir / "progress.jsonl"
        extra_env = {
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "KUBETUNE_PROGRESS_FILE": str(progress_file),
            "KUBETUNE_PROGRESS_INTERVAL": "1",
            "KUBETUNE_METRICS_PORT": "0",
            "JOB_COMPLETION_INDEX": "0",
            **{k: v for k, v in os.environ.items() if k.startswith(HOST_ENV_PREFIXES)},
            **(env or {}),
        }
        prepared = local_pod.prepare(
            pod_spec,
            workdir=step_dir,
            config_maps=config_maps,
            fields={"metadata.name": f"{job['metadata']['name']}-local", "metadata.namespace": workload.namespace_of(resource)},
            extra_env=extra_env,
            gpus=self.gpus,
        )
        started = time.monotonic()
        process = local_pod.LocalContainer(prepared, keep_fds=self.locks.fds)
        offset = 0
        interrupted = killed = False
        try:
            while True:
                try:
                    outcome = process.wait(timeout=0.5)
                    break
                except subprocess.TimeoutExpired:
                    offset = self._forward_progress(resource, progress_file, offset)
        except KeyboardInterrupt:
            # The process runs in a session of its own, so Ctrl-C reached only us: pass it on.
            interrupted = True
            outcome, killed = _stop(process)
        self._forward_progress(resource, progress_file, offset)
        duration = time.monotonic() - started
        # The trainer keeps credentials out of what it writes; what else a step printed is not trusted to.
        outcome = dataclasses.replace(
            outcome, termination_message=redact(outcome.termination_message), log_tail=redact(outcome.log_tail)
        )
        summary: dict[str, Any] = {}
        if outcome.termination_message:
            with contextlib.suppress(json.JSONDecodeError):
                summary = json.loads(outcome.termination_message)
            if not isinstance(summary, dict):
                summary = {}
        if outcome.exit_code == 0 and summary:
            # Scratch space (model downloads, temp files) is not needed once the outputs are stored.
            shutil.rmtree(step_dir / "volumes", ignore_errors=True)
            return StepResult(resource, "Succeeded", duration, summary, log_tail=outcome.log_tail)
        message = failure_message(outcome, summary, interrupted, killed)
        return StepResult(resource, "Failed", duration, summary, message, outcome.log_tail, interrupted)

    def _forward_progress(self, resource: Resource, path: Path, offset: int) -> int:
        # The file appears with the pod's first event; until then there is nothing to forward.
        with contextlib.suppress(OSError), open(path, encoding="utf-8") as handle:
            handle.seek(offset)
            for line in handle:
                if not line.endswith("\n"):
                    break
                offset += len(line.encode("utf-8"))
                with contextlib.suppress(json.JSONDecodeError):
                    self.on_event(resource, json.loads(line))
        return offset

    # -- the whole run ---------------------------------------------------------------------------
    def run(self, resources: list[Resource], on_step: Callable[[StepResult], None] | None = None) -> list[StepResult]:
        cwd = Path.cwd()
        ordered = graph.order([without_cluster_plumbing(absolute_file_uris(r, cwd)) for r in resources],
                             require_references=True)
        with self.locks:
            # Before anything is read or written: another run's state, pod folders and outputs are its own.
            self.locks.take(
                self.workdir / "lock", f"work folder {self.workdir}", "wait for it, or give this one another --workdir"
            )
            for resource in ordered:
                # A folder --force refuses stays untouched: no marker, no lock file.
                if self._refusal(resource) is None:
                    self._claim_output(resource)
            return self._run_all(ordered, on_step)

    def _run_all(self, ordered: list[Resource], on_step: Callable[[StepResult], None] | None) -> list[StepResult]:
        steps_state = self._load_state()
        results = []
        for resource in ordered:
            blocked = [
                f"{kind} {name}"
                for kind, namespace, name in graph.references(resource)
                if not self.results[(kind, namespace, name)].ok
            ]
            if blocked:
                result = StepResult(resource, "Blocked", message=f"waits for {', '.join(blocked)}, which did not succeed")
            else:
                result = self._run_step(resource, steps_state)
            self.results[graph.key(resource)] = result
            results.append(result)
            if on_step:
                on_step(result)
            if result.interrupted:
                break
        return results

    def _run_step(self, resource: Resource, steps_state: dict[str, Any]) -> StepResult:
        manifests, inputs = self._children(resource)
        fingerprint = _digest({"spec": resource.spec.to_wire(), "inputs": inputs, "manifests": manifests})
        state_key = self._state_key(resource, self.settings.artifact_root)
        previous = steps_state.get(state_key)
        if not self.force and previous and previous.get("fingerprint") == fingerprint and self._outputs_exist(previous):
            return StepResult(resource, "Skipped", 0.0, previous["summary"], "up to date")
        env = {}
        if self.force and builder_of(type(resource)).forced_afresh:
            # The trainer reuses a finished run found in its output (a restarted pod must not train
            # again); --force means train again. The trainer drops the old run itself, once its inputs
            # resolve, and only in an output kubetune created.
            refusal = self._refusal(resource)
            if refusal:
                return StepResult(resource, "Failed", message=refusal)
            env[AFRESH_ENV] = "1"
        result = self._run_job(resource, manifests, env)
        if result.phase == "Succeeded":
            steps_state[state_key] = {"fingerprint": fingerprint, "summary": result.summary}
        else:
            steps_state.pop(state_key, None)
        self._save_state(steps_state)
        return result

    @staticmethod
    def _outputs_exist(previous: dict[str, Any]) -> bool:
        output = previous.get("summary", {}).get("output", "")
        if output.startswith("file://"):
            return (Path(output[len("file://") :]) / "manifest.json").is_file()
        return True

