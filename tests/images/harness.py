"""What the image checks share: the image a module checks, run as users and pods run it, and the
sizes the checks collect for the table printed at the end (tests/images/conftest.py)."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.cluster.node.image import ImageRootfs
from tests.cluster.node.runtime import ContainerSpec, Exit
from tests.images.build import IMAGES, Built
from tests.images.buildah import Buildah, Image

SIZES: dict[str, dict[str, Any]] = {}


def wanted() -> set[str]:
    names = set(os.environ.get("KUBETUNE_IMAGE_TESTS", "").replace(",", " ").split())
    return set(IMAGES) if "all" in names else names & set(IMAGES)


@dataclass
class InImage:
    """One image's container: `run` is `buildah run`, as users would run the image; `pod` starts a
    container the way the test cluster's node agent does (tests/cluster/node/image.py): the image's
    root read-only, the pod's writable mounts, its env and its user."""

    built: Built
    image: Image
    runtime: ImageRootfs
    buildah: Buildah
    container: str
    scratch: Path
    pods: int = field(default=0)

    def run(self, *argv: str, user: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        """`buildah run` in the image's container (its entrypoint is not implied: argv is the command)."""
        flags = ["--user", user] if user else []
        return subprocess.run(self.buildah.command("run", "--isolation", "chroot", *flags, self.container, "--", *argv),
                              capture_output=True, text=True, timeout=timeout, check=False)

    def pod(self, argv: list[str], container: Mapping[str, Any], pod_spec: Mapping[str, Any],
            binds: Mapping[str, Path] | None = None, env: Mapping[str, str] | None = None,
            timeout: float = 600) -> tuple[Exit, str]:
        """Run argv as `container` of `pod_spec` would run: its securityContext (user, read-only
        root), each volumeMount on an empty host folder (emptyDir) and its plain `value` env, plus
        `binds` (container path → host path) and `env`. Returns the exit and the log."""
        self.pods += 1
        workdir = self.scratch / f"pod-{self.pods}"
        mounts = {m["mountPath"]: workdir / "volumes" / m["name"] for m in container.get("volumeMounts") or []}
        for folder in mounts.values():
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o777)  # an emptyDir is writable by the pod's user (fsGroup)
        security = (pod_spec.get("securityContext") or {}) | (container.get("securityContext") or {})
        user = (security["runAsUser"], security.get("runAsGroup", security["runAsUser"])) \
            if "runAsUser" in security else None
        spec = ContainerSpec(
            pod=f"images/{self.built.spec.name}", name=container["name"], image=self.built.spec.reference,
            argv=list(argv), env={e["name"]: str(e["value"]) for e in container.get("env") or [] if "value" in e}
            | dict(env or {}), mounts=mounts | dict(binds or {}), workdir=workdir,
            termination_message_path=container.get("terminationMessagePath") or "/dev/termination-log",
            fallback_to_logs=True, user=user, read_only_root=bool(security.get("readOnlyRootFilesystem")))
        workdir.mkdir(parents=True, exist_ok=True)
        started = self.runtime.start(spec)
        try:
            started.process.wait(timeout)
        except subprocess.TimeoutExpired:
            started.signal(signal.SIGKILL)
            started.process.wait()
            raise AssertionError(f"{argv} ran past {timeout} s; its log:\n{spec.log_file.read_text()[-3000:]}") from None
        return started.wait(), spec.log_file.read_text(errors="replace")
