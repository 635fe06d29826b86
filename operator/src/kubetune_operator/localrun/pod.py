"""Run one container of a pod spec as a local process, the way a kubelet would start it.

Given the pod spec the builders render, this materialises its volumes in a work directory
(ConfigMaps and Secrets as files, emptyDirs as directories), points every mount path in argv
and env at those directories, resolves env (`value`, `$(VAR)`, `valueFrom` secretKeyRef,
configMapKeyRef and fieldRef), sends the termination message to a local file and runs the
argv with `subprocess` (never a shell).

GPUs are not requested locally. A `torchrun` command is collapsed onto this machine: one node,
as many processes as visible GPUs (CUDA_VISIBLE_DEVICES, else /dev/nvidiaN); with one GPU or
none, torchrun is dropped and its target runs as one plain process.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TERMINATION_LIMIT = 4096  # bytes Kubernetes keeps of a termination message
LOG_TAIL_LINES = 80  # what FallbackToLogsOnError keeps (and at most TERMINATION_LIMIT bytes)
HOST_ENV = ("PATH", "LANG", "LC_ALL", "SYSTEMROOT")
# torchrun options that take no value.
TORCHRUN_FLAGS = {"--standalone", "-m", "--module", "--no-python", "--no_python", "--run-path", "--run_path"}
_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


class PodSpecError(ValueError):
    """The pod spec cannot run locally; the message names the volume, env var or field."""


@dataclass(frozen=True)
class PodResult:
    exit_code: int
    termination_message: str
    log_tail: str


@dataclass
class PreparedContainer:
    argv: list[str]
    env: dict[str, str]
    workdir: Path
    termination_log: Path
    log_file: Path
    fallback_to_logs: bool = False
    mounts: dict[str, Path] = field(default_factory=dict)


def local_gpu_count(env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    return len([p for p in Path("/dev").glob("nvidia[0-9]*")])


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: defined variables are replaced, `$$` is a literal `$`,
    and references to undefined variables stay as written."""
    def replace(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _VAR.sub(replace, text)


def _field_value(path: str, fields: Mapping[str, str], where: str) -> str:
    if path in fields:
        return fields[path]
    raise PodSpecError(f"{where}: fieldRef {path!r} has no local value (known: {', '.join(sorted(fields))})")


def materialize_volumes(
    pod_spec: Mapping[str, Any],
    workdir: Path,
    config_maps: Mapping[str, Mapping[str, str]],
    secrets: Mapping[str, Mapping[str, str]],
) -> dict[str, Path]:
    """Volume name → local directory holding what the volume would hold."""
    volumes: dict[str, Path] = {}
    for volume in pod_spec.get("volumes") or []:
        name = volume["name"]
        target = workdir / "volumes" / name
        target.mkdir(parents=True, exist_ok=True)
        if "configMap" in volume:
            source = volume["configMap"]
            _write_files(target, config_maps.get(source.get("name")), source, f"volume {name}: ConfigMap")
        elif "secret" in volume:
            source = volume["secret"]
            _write_files(target, secrets.get(source.get("secretName")), source, f"volume {name}: Secret",
                         key="secretName")
        elif "emptyDir" not in volume:
            kinds = ", ".join(k for k in volume if k != "name")
            raise PodSpecError(f"volume {name}: type {kinds} cannot run locally (emptyDir, configMap, secret can)")
        volumes[name] = target
    return volumes


def _write_files(target: Path, data: Mapping[str, str] | None, source: Mapping[str, Any], what: str,
                 key: str = "name") -> None:
    if data is None:
        if source.get("optional"):
            return
        raise PodSpecError(f"{what} {source.get(key)!r} not found")
    items = source.get("items") or [{"key": k, "path": k} for k in data]
    mode = source.get("defaultMode")
    for item in items:
        if item["key"] not in data:
            raise PodSpecError(f"{what} {source.get(key)!r} has no key {item['key']!r}")
        path = target / item["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(data[item["key"]], encoding="utf-8")
        if mode is not None:
            path.chmod(item.get("mode", mode) | 0o200)


def localize(text: str, mounts: Mapping[str, Path]) -> str:
    """Replace mount paths at path boundaries with their local directories, in one pass (a local
    directory may itself start with a mount path such as /tmp), the longest mount path first."""
    if not mounts:
        return text
    paths = {mount.rstrip("/") or "/": str(local) for mount, local in mounts.items()}
    alternatives = "|".join(re.escape(p) for p in sorted(paths, key=len, reverse=True))
    # A file:// URI names a path on this machine already (`kubetune run` makes them absolute), so a
    # host path such as file:///tmp/artifacts must not be mistaken for the pod's /tmp.
    pattern = re.compile(rf"(?<![\w.-])(?<!file://)({alternatives})(?=/|$|[^\w.-])")
    return pattern.sub(lambda match: paths[match.group(1)], text)


def container_env(
    container: Mapping[str, Any],
    config_maps: Mapping[str, Mapping[str, str]],
    secrets: Mapping[str, Mapping[str, str]],
    fields: Mapping[str, str],
) -> dict[str, str]:
    env: dict[str, str] = {}
    for entry in container.get("env") or []:
        name = entry["name"]
        where = f"container {container.get('name')} env {name}"
        if "value" in entry:
            env[name] = expand(str(entry["value"]), env)
            continue
        source = entry.get("valueFrom") or {}
        if "secretKeyRef" in source or "configMapKeyRef" in source:
            ref = source.get("secretKeyRef") or source.get("configMapKeyRef")
            store = secrets if "secretKeyRef" in source else config_maps
            what = "Secret" if "secretKeyRef" in source else "ConfigMap"
            value = (store.get(ref["name"]) or {}).get(ref["key"])
            if value is None:
                if ref.get("optional"):
                    continue
                raise PodSpecError(f"{where}: {what} {ref['name']!r} key {ref['key']!r} not found")
            env[name] = value
        elif "fieldRef" in source:
            env[name] = _field_value(source["fieldRef"]["fieldPath"], fields, where)
        else:
            raise PodSpecError(f"{where}: valueFrom {', '.join(source) or '(empty)'} cannot run locally")
    return env


def collapse_torchrun(argv: list[str], gpus: int) -> list[str]:
    """torchrun for N nodes × G GPUs → this machine's GPUs (or a plain process with one or none)."""
    if not argv or Path(argv[0]).name != "torchrun":
        return argv
    index, module, no_python = 1, False, False
    while index < len(argv) and argv[index].startswith("-"):
        option = argv[index]
        if option in ("-m", "--module"):
            module = True
        elif option in ("--no-python", "--no_python"):
            no_python = True
        index += 1 if "=" in option or option in TORCHRUN_FLAGS else 2
    if index >= len(argv):
        raise PodSpecError(f"torchrun command has no script to run: {argv}")
    target, rest = argv[index], argv[index + 1:]
    entry = [*(["-m"] if module else []), *(["--no-python"] if no_python else []), target]
    if gpus > 1:
        return ["torchrun", "--standalone", f"--nproc-per-node={gpus}", *entry, *rest]
    if no_python:
        return [target, *rest]
    return [sys.executable, *(["-m"] if module else []), target, *rest]


def prepare(
    pod_spec: Mapping[str, Any],
    *,
    workdir: Path,
    config_maps: Mapping[str, Mapping[str, str]] | None = None,
    secrets: Mapping[str, Mapping[str, str]] | None = None,
    fields: Mapping[str, str] | None = None,
    extra_env: Mapping[str, str] | None = None,
    container_index: int = 0,
    gpus: int | None = None,
    host_argv: list[str] | None = None,
) -> PreparedContainer:
    """Everything needed to start the container; PodSpecError names what cannot run locally.

    `fields` are fieldRef values (`metadata.name`, `metadata.namespace`, `metadata.annotations['…']`, …);
    `extra_env` wins over the pod's env (AWS_* for a local S3, a progress URL that reaches the host);
    `host_argv` replaces the container's command with one of this machine's, run as given.
    """
    config_maps, secrets, fields = config_maps or {}, secrets or {}, fields or {}
    container = pod_spec["containers"][container_index]
    workdir.mkdir(parents=True, exist_ok=True)
    volumes = materialize_volumes(pod_spec, workdir, config_maps, secrets)
    mounts: dict[str, Path] = {}
    for mount in container.get("volumeMounts") or []:
        if mount["name"] not in volumes:
            raise PodSpecError(f"container {container.get('name')}: mount {mount['name']!r} names no volume")
        local = volumes[mount["name"]] / mount.get("subPath", "")
        mounts[mount["mountPath"]] = local
    termination_log = workdir / "termination-log"
    termination_log.unlink(missing_ok=True)
    mounts.setdefault(container.get("terminationMessagePath") or "/dev/termination-log", termination_log)
    env = {name: os.environ[name] for name in HOST_ENV if name in os.environ}
    env |= {name: localize(value, mounts) for name, value in container_env(container, config_maps, secrets, fields).items()}
    env["KUBETUNE_TERMINATION_LOG"] = str(termination_log)
    env |= dict(extra_env or {})
    if host_argv is not None:
        argv = list(host_argv)
    else:
        command = [*(container.get("command") or []), *(container.get("args") or [])]
        if not command:
            raise PodSpecError(f"container {container.get('name')}: no command (images' entrypoints do not exist locally)")
        argv = [localize(expand(str(a), env), mounts) for a in command]
        argv = collapse_torchrun(argv, local_gpu_count() if gpus is None else gpus)
    return PreparedContainer(
        argv=argv,
        env=env,
        workdir=workdir,
        termination_log=termination_log,
        log_file=workdir / "container.log",
        fallback_to_logs=container.get("terminationMessagePolicy") == "FallbackToLogsOnError",
        mounts=mounts,
    )


def _libc_prctl():
    """prctl(2) where there is one (Linux); None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None


PR_SET_PDEATHSIG = 1
_prctl = _libc_prctl()


def _stop_with_parent(parent: int):
    """A preexec_fn: SIGTERM this process when its parent dies, as a pod is stopped with its node.

    A runner killed outright (SIGKILL, OOM) cannot pass anything on, so the kernel does: the
    process stops as on a preemption (a trainer writes a checkpoint) instead of training on alone.
    Resolved before the fork: the child only makes the call.
    """
    prctl = _prctl

    def preexec() -> None:
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:
            # The parent died before prctl took effect: stop now, as it would have asked.
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


class LocalContainer:
    """A started container process: signal it, wait for it, read its result."""

    def __init__(self, prepared: PreparedContainer, keep_fds: tuple[int, ...] = ()):
        """`keep_fds` stay open in the process (locks it must hold while it runs)."""
        self.prepared = prepared
        with open(prepared.log_file, "ab") as log:
            # A session of its own, so a signal reaches torchrun's workers too.
            self.process = subprocess.Popen(
                prepared.argv,
                env=prepared.env,
                cwd=prepared.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                pass_fds=keep_fds,
                preexec_fn=_stop_with_parent(os.getpid()),
            )

    def signal(self, signum: int = signal.SIGTERM) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signum)

    def wait(self, timeout: float | None = None) -> PodResult:
        code = self.process.wait(timeout)
        # Like Kubernetes: a container killed by signal N exits 128 + N.
        exit_code = 128 - code if code < 0 else code
        tail = log_tail(self.prepared.log_file)
        message = ""
        if self.prepared.termination_log.exists():
            message = self.prepared.termination_log.read_bytes()[:TERMINATION_LIMIT].decode("utf-8", "replace")
        if not message and exit_code != 0 and self.prepared.fallback_to_logs:
            message = tail
        return PodResult(exit_code=exit_code, termination_message=message, log_tail=tail)


def log_tail(path: Path, lines: int = LOG_TAIL_LINES, limit: int = TERMINATION_LIMIT) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    text = data[-limit:].decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:])


def run(pod_spec: Mapping[str, Any], **kwargs: Any) -> PodResult:
    """prepare() and run the container to the end."""
    return LocalContainer(prepare(pod_spec, **kwargs)).wait()
