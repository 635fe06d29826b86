"""buildah and skopeo as this machine runs them: no container engine, storage of our own.

Every call uses storage under a per-machine cache, `$KUBETUNE_CONTAINERS_CACHE`, else
`$XDG_CACHE_HOME/kubetune/containers`, else `~/.cache/kubetune/containers`, and chroot isolation
(no OCI runtime needed). The storage driver is the kernel's overlay where this machine lets root
mount one on the cache's filesystem (layers stored once, containers made without copying), else
vfs, which needs nothing but keeps each layer, and each container, as a full copy of the
filesystem: gigabytes and minutes for the trainer and eval images. `$KUBETUNE_STORAGE_DRIVER`
chooses one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.machine_cache import machine_cache

# Debian's packages: buildah and skopeo; debootstrap makes the local base image.
TOOLS = {"buildah": "buildah", "skopeo": "skopeo", "debootstrap": "debootstrap"}


def cache_dir() -> Path:
    return machine_cache("containers", "KUBETUNE_CONTAINERS_CACHE")


class ToolError(RuntimeError):
    """A buildah, skopeo or debootstrap call failed; the message has its command and output."""


def missing_tools() -> list[str]:
    return [package for tool, package in TOOLS.items() if shutil.which(tool) is None]


@dataclass(frozen=True)
class Image:
    """What an image's config says, as buildah inspects it."""

    name: str
    id: str
    user: str
    env: dict[str, str]
    entrypoint: list[str]
    working_dir: str
    size: int  # bytes, uncompressed

    @property
    def uid_gid(self) -> tuple[int, int]:
        uid, _, gid = self.user.partition(":")
        return int(uid), int(gid or uid)


def overlay_works(folder: Path) -> bool:
    """Whether root may mount the kernel's overlay filesystem on `folder`'s filesystem (not on
    another overlay, not without the privilege), tried in a mount namespace of its own."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    folder.mkdir(parents=True, exist_ok=True)
    probe = Path(tempfile.mkdtemp(prefix="overlay-probe-", dir=folder))
    try:
        for part in ("lower", "upper", "work", "merged"):
            (probe / part).mkdir()
        options = f"lowerdir={probe / 'lower'},upperdir={probe / 'upper'},workdir={probe / 'work'}"
        return subprocess.run(["unshare", "--mount", "--propagation", "private", "mount", "-t", "overlay", "overlay",
                               "-o", options, str(probe / "merged")], capture_output=True, check=False).returncode == 0
    finally:
        shutil.rmtree(probe, ignore_errors=True)


class Buildah:
    def __init__(self, root: Path | None = None, driver: str | None = None):
        self.root = (root or cache_dir()).resolve()
        self.driver = driver or os.environ.get("KUBETUNE_STORAGE_DRIVER") or (
            "overlay" if overlay_works(self.root) else "vfs")
        # One store per driver: containers/storage refuses a store made by another driver.
        self.storage = self.root / f"storage-{self.driver}"
        self.runroot = self.root / f"run-{self.driver}"

    def command(self, *args: str) -> list[str]:
        return ["buildah", "--root", str(self.storage), "--runroot", str(self.runroot),
                "--storage-driver", self.driver, *args]

    def run(self, *args: str, log: Path | None = None, timeout: float = 3600, check: bool = True,
            tool: Sequence[str] | None = None, scratch: Path | None = None) -> str:
        """Run a buildah command (or `tool`, e.g. skopeo), its output to `log` when given;
        `scratch` takes its temporary files (a push stages whole layers in /var/tmp otherwise,
        and leaves them there when it is killed)."""
        argv = [*tool, *args] if tool else self.command(*args)
        env = {**os.environ, "BUILDAH_ISOLATION": "chroot"} | ({"TMPDIR": str(scratch)} if scratch else {})
        if log is not None:
            with open(log, "ab") as out:
                out.write(f"$ {' '.join(argv)}\n".encode())
                out.flush()
                done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      env=env, timeout=timeout, check=False)
            if check and done.returncode:
                tail = log.read_text(errors="replace")[-3000:]
                raise ToolError(f"{' '.join(argv[:8])} ... failed ({done.returncode}); the end of {log}:\n{tail}")
            return ""
        done = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, env=env,
                              timeout=timeout, check=False)
        if check and done.returncode:
            raise ToolError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()[-3000:]}")
        return done.stdout

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """One builder at a time per machine: two would both build and then remove each other's images."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / "lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def image_id(self, name: str) -> str | None:
        done = subprocess.run(self.command("inspect", "--type", "image", "--format", "{{.FromImageID}}", name),
                              capture_output=True, text=True, check=False)
        return done.stdout.strip() or None if done.returncode == 0 else None

    def inspect(self, name: str) -> Image:
        data = json.loads(self.run("inspect", "--type", "image", name))
        config = data["OCIv1"]["config"]
        env = dict(item.split("=", 1) for item in config.get("Env") or [])
        images = json.loads(self.run("images", "--json", "--no-trunc", data["FromImageID"]))
        return Image(name=name, id=data["FromImageID"], user=config.get("User") or "0",
                     env=env, entrypoint=list(config.get("Entrypoint") or []),
                     working_dir=config.get("WorkingDir") or "/", size=_bytes(images[0]["size"]))

    def remove_image(self, image_id: str) -> None:
        """Remove an image unless another image is built on it (then `rmi --prune` takes it later)."""
        self.run("rmi", image_id, check=False)

    def containers(self) -> dict[str, str]:
        """Container name → id, of every container in our storage."""
        listing = json.loads(self.run("containers", "--all", "--json") or "null") or []
        return {c["containername"]: c["id"] for c in listing}

    def rootfs(self, image: str, name: str) -> Path:
        """The root filesystem of a container of `image` named `name` (made when missing, or when
        it holds another build of the image); callers mount it read-only."""
        wanted = self.image_id(image)
        if wanted is None:
            raise ToolError(f"no image {image} in {self.storage}: `make images` builds it")
        existing = self.containers().get(name)
        if existing is not None:
            current = json.loads(self.run("inspect", "--type", "container", name))["FromImageID"]
            if current != wanted:
                self.run("rm", name)
                existing = None
        if existing is None:
            self.run("from", "--pull-never", "--name", name, image)
        return Path(self.run("mount", name).strip())

    def remove_container(self, name: str) -> None:
        self.run("rm", name, check=False)


def _bytes(human: str) -> int:
    """buildah's sizes ("510 MB", decimal units, three digits) in bytes."""
    number, unit = human.split()
    return round(float(number) * {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}[unit])
