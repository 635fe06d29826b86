"""Fixtures of the image checks: each image built (or found built) and run for real.

The checks build images (minutes and gigabytes the first time), so they run only when asked:
`KUBETUNE_IMAGE_TESTS` names the images to check (`operator`, `trainer`, `eval`, or `all`;
`make images-test` sets `all`). Elsewhere they skip, saying so.

A module checks one image (its `IMAGE`). `in_image` gives it that image's container: `buildah
run` as users would run the image, and `pod(...)`, which starts a container the way the test
cluster's node agent does (tests/cluster/node/image.py): the image's root read-only, the pod's
writable mounts, its env and its user. At the end of the session the sizes go into a table,
printed and written to `<cache>/sizes.md`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.node.image import ImageRootfs, container_name
from tests.cluster.node.runtime import ContainerSpec, Exit, HostProcess
from tests.images.build import IMAGES, Builder, Built
from tests.images.buildah import Buildah, Image, missing_tools

SIZES: dict[str, dict[str, Any]] = {}


def wanted() -> set[str]:
    names = set(os.environ.get("KUBETUNE_IMAGE_TESTS", "").replace(",", " ").split())
    return set(IMAGES) if "all" in names else names & set(IMAGES)


@dataclass
class InImage:
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


@pytest.fixture(scope="module")
def in_image(request) -> Iterator[InImage]:
    name = request.module.IMAGE
    if name not in wanted():
        pytest.skip(f"builds and runs the {name} image (minutes, gigabytes): make images-test, or "
                    f"KUBETUNE_IMAGE_TESTS={name}")
    if missing_tools():
        pytest.fail(f"missing Debian packages {', '.join(missing_tools())}: make images-deps installs them")
    if os.geteuid() != 0:
        pytest.fail("buildah with vfs storage and chroot isolation runs as root here")
    buildah = Buildah()
    built = {b.spec.name: b for b in Builder(buildah, say=lambda _: None).ensure([name])}[name]
    reference = built.spec.reference
    runtime = ImageRootfs([reference], HostProcess(), buildah)
    scratch = Path(tempfile.mkdtemp(prefix=f"images-{name}-"))
    try:
        yield InImage(built, runtime.roots[reference][1], runtime, buildah, container_name(reference), scratch)
    finally:
        # The operator's container stays for the test cluster; the others are gigabytes.
        runtime.close(remove=name != "operator")
        shutil.rmtree(scratch, ignore_errors=True)


def pytest_terminal_summary(terminalreporter) -> None:
    if not SIZES:
        return
    lines = ["| image | size | compressed (pulled) | layers | what dominates it |", "|---|---|---|---|---|"]
    for name in IMAGES:
        if name in SIZES:
            row = SIZES[name]
            lines.append(f"| {row['reference']} | {row['size'] / 1e9:.2f} GB | {row['compressed'] / 1e9:.2f} GB | "
                         f"{row['layers']} | {row['dominant']} |")
    table = "\n".join(lines)
    terminalreporter.write_sep("=", "image sizes")
    terminalreporter.write_line(table)
    (Buildah().root / "sizes.md").write_text(table + "\n")
