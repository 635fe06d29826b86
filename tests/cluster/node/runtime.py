"""How the node agent starts a container: the one pluggable piece between a pod and a process.

The agent resolves everything a pod spec says (volumes as host folders, env, argv) into a
`ContainerSpec`; a `Runtime` turns that into a running `Container`. `HostProcess` runs the argv
with this machine's programs (the venv's `kubetune` and `kubetune-trainer` stand in for the
images), in a private mount namespace where the pod's `/var/run/secrets/...` and `/etc/hosts`
are its own; other mount paths in argv and env are rewritten to their host folders, as
`kubetune run` does. `image.ImageRootfs` starts images built here from their own root filesystem.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from kubetune_operator.localrun.pod import TERMINATION_LIMIT, localize, log_tail

ENTER = Path(__file__).with_name("enter.py")
# Mount paths that only a private mount namespace can give a host process (their parents do not
# exist on a host); everything else is reached by rewriting paths.
PRIVATE_ROOTS = ("/var/run/", "/run/")
HOST_ENV = ("PATH", "LANG", "LC_ALL", "HOME")


@dataclass
class ContainerSpec:
    """A container, resolved: what a runtime needs and nothing Kubernetes-shaped."""

    pod: str  # namespace/name, for messages
    name: str
    image: str
    argv: list[str]  # command + args, $(VAR) already expanded
    env: dict[str, str]
    mounts: dict[str, Path]  # mount path in the container → host folder (or file)
    workdir: Path  # the pod's own folder on the host
    termination_message_path: str
    fallback_to_logs: bool
    hosts: dict[str, str] = field(default_factory=dict)  # name → address, for /etc/hosts
    working_dir: str | None = None
    user: tuple[int, int] | None = None  # runAsUser, runAsGroup (else the image's USER)
    read_only_root: bool = False

    @property
    def log_file(self) -> Path:
        return self.workdir / f"{self.name}.log"

    @property
    def termination_log(self) -> Path:
        return self.workdir / f"{self.name}.termination-log"


@dataclass(frozen=True)
class Exit:
    code: int
    message: str  # the termination message (or the log tail, with FallbackToLogsOnError)


class Container(Protocol):
    def signal(self, signum: int) -> None: ...

    def wait(self) -> Exit:
        """Block until the container ends."""


class Runtime(Protocol):
    def start(self, spec: ContainerSpec) -> Container: ...


class StartError(Exception):
    """The container could not start (no such command); the agent reports it as the kubelet does."""


class HostProcess:
    """Containers as processes of this machine (see the module docstring).

    `command_map(namespace, argv)` may replace a container's argv with another (tests swap trainer
    commands for fakes); it returns None to keep it.
    """

    def __init__(self, extra_path: list[Path] | None = None,
                 command_map: Callable[[str, list[str]], list[str] | None] | None = None):
        self.extra_path = [str(p) for p in extra_path or []]
        self.command_map = command_map
        self.namespaces = shutil.which("unshare") is not None and os.geteuid() == 0

    def start(self, spec: ContainerSpec) -> Container:
        private = {path: host for path, host in spec.mounts.items() if path.startswith(PRIVATE_ROOTS)}
        rewritten = {path: host for path, host in spec.mounts.items() if path not in private}
        rewritten.setdefault(spec.termination_message_path, spec.termination_log)
        env = {name: os.environ[name] for name in HOST_ENV if name in os.environ}
        env["PATH"] = os.pathsep.join([*self.extra_path, env.get("PATH", os.defpath)])
        env |= {name: localize(value, rewritten) for name, value in spec.env.items()}
        # The trainer and the promote command write their summary where this says (contracts §5).
        env["KUBETUNE_TERMINATION_LOG"] = str(spec.termination_log)
        argv = [localize(a, rewritten) for a in spec.argv]
        namespace = spec.pod.split("/", 1)[0]
        mapped = self.command_map(namespace, argv) if self.command_map else None
        argv = mapped if mapped is not None else argv
        if shutil.which(argv[0], path=env["PATH"]) is None:
            raise StartError(f'exec: "{argv[0]}": executable file not found in $PATH')
        cwd = localize(spec.working_dir, rewritten) if spec.working_dir else str(spec.workdir)
        if self.namespaces and (private or spec.hosts):
            plan = spec.workdir / f"{spec.name}.namespace.json"
            plan.write_text(json.dumps({"binds": {p: str(h) for p, h in private.items()},
                                        "hosts": spec.hosts, "argv": argv, "cwd": cwd}))
            argv = ["unshare", "--mount", "--propagation", "private", "--", sys.executable, "-P", str(ENTER), str(plan)]
        spec.termination_log.unlink(missing_ok=True)
        return HostContainer(spec, argv, env, cwd)


class HostContainer:
    def __init__(self, spec: ContainerSpec, argv: list[str], env: Mapping[str, str], cwd: str):
        self.spec = spec
        Path(cwd).mkdir(parents=True, exist_ok=True)
        with open(spec.log_file, "ab") as log:
            # A session of its own, so a signal reaches every process the container started.
            self.process = subprocess.Popen(argv, env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.process.pid

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signum)

    def wait(self) -> Exit:
        code = self.process.wait()
        # As in Kubernetes: killed by signal N, the container exits 128 + N.
        code = 128 - code if code < 0 else code
        message = ""
        if self.spec.termination_log.exists():
            message = self.spec.termination_log.read_bytes()[:TERMINATION_LIMIT].decode("utf-8", "replace")
        if not message and code != 0 and self.spec.fallback_to_logs:
            message = log_tail(self.spec.log_file)
        return Exit(code, message)

