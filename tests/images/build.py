"""`make images`: the three Dockerfiles built with buildah, each on the local base, cached.

An image is built from the same Dockerfile users build, with `--build-arg BASE=` pointing at the
local Debian base (`base.py`); eval's base is the trainer image built just before it. Each build
is keyed by the Dockerfile, its ignore file, the files of the folders it copies and the id of its
base, and the key is kept in `<cache>/stamps/`: a second `make images` with nothing changed builds
nothing, and a changed trainer rebuilds the trainer and eval. Superseded images are removed, since
vfs keeps every layer as a full copy.

The image names are the chart's (`charts/kubetune/values.yaml`: `images.<name>.repository`, tagged
with the chart's appVersion), so the test cluster finds the operator image under the name the
chart's Deployment asks for.
"""

from __future__ import annotations

import hashlib
import json
import os
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.images import base
from tests.images.buildah import Buildah

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "kubetune"
IGNORED = ("__pycache__", ".egg-info", ".pyc")
NODE_CONTAINERS = "kubetune-node-"  # tests/cluster/node/image.py's, which builds must not remove


@dataclass(frozen=True)
class ImageSpec:
    name: str  # operator, trainer or eval: images/<name>/Dockerfile, images.<name> in values.yaml
    context: tuple[str, ...]  # the repository folders its Dockerfile copies
    built_on: str | None = None  # another of these images it is built FROM (else the local base)

    @property
    def dockerfile(self) -> Path:
        return ROOT / "images" / self.name / "Dockerfile"

    @property
    def ignorefile(self) -> Path:
        return self.dockerfile.with_name("Dockerfile.dockerignore")

    @property
    def reference(self) -> str:
        """The name the chart runs it by: repository:appVersion."""
        values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
        image = values["images"][self.name]
        return f"{image['repository']}:{image.get('tag') or app_version()}"

    def key(self, base_id: str) -> str:
        digest = hashlib.sha256(base_id.encode())
        for path in (self.dockerfile, self.ignorefile):
            digest.update(path.read_bytes())
        for folder in self.context:
            for file in sorted((ROOT / folder).rglob("*")):
                if file.is_file() and not any(part.endswith(IGNORED) for part in file.relative_to(ROOT).parts):
                    digest.update(str(file.relative_to(ROOT)).encode() + b"\0" + file.read_bytes() + b"\0")
        return digest.hexdigest()[:16]


IMAGES = {spec.name: spec for spec in (
    ImageSpec("operator", ("operator",)),
    ImageSpec("trainer", ("trainer",)),
    ImageSpec("eval", ("trainer",), built_on="trainer"),
)}


def app_version() -> str:
    return str(yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))["appVersion"])


def ca_bundle() -> str:
    """This machine's CA bundle, which RUN steps see in place of the image's own (a TLS-inspecting
    proxy's CA reaches pip that way, and no image keeps it)."""
    paths = ssl.get_default_verify_paths()
    for candidate in (os.environ.get("SSL_CERT_FILE"), paths.cafile, "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return str(Path(candidate).resolve())
    raise FileNotFoundError("no CA bundle on this machine (set SSL_CERT_FILE)")


@dataclass(frozen=True)
class Built:
    spec: ImageSpec
    id: str
    seconds: float
    cached: bool


class Builder:
    def __init__(self, buildah: Buildah | None = None, say: Callable[[str], None] = print):
        self.buildah = buildah or Buildah()
        self.say = say
        self.logs = self.buildah.root / "logs"
        self.stamps = self.buildah.root / "stamps"

    def ensure(self, names: list[str] | None = None) -> list[Built]:
        """Build the images named (all three by default, and what they are built on) unless cached."""
        wanted = set(names or IMAGES)
        wanted |= {IMAGES[n].built_on for n in wanted if IMAGES[n].built_on}
        self.logs.mkdir(parents=True, exist_ok=True)
        self.stamps.mkdir(parents=True, exist_ok=True)
        cached = self._cached(wanted)
        if cached is not None:  # nothing to build: no need to wait for another builder's lock
            return cached
        built: dict[str, Built] = {}
        with self.buildah.lock():
            began = time.monotonic()
            base_image = base.ensure(self.buildah, self.logs / "base.log")
            if time.monotonic() - began > 1:
                self.say(f"base {base_image}: made by debootstrap in {time.monotonic() - began:.0f} s")
            for spec in IMAGES.values():  # in order: what an image is built on comes first
                if spec.name in wanted:
                    parent = built[spec.built_on].spec.reference if spec.built_on else base_image
                    built[spec.name] = self._ensure_one(spec, parent)
            self.buildah.run("rmi", "--prune", check=False)
        return list(built.values())

    def _cached(self, wanted: set[str]) -> list[Built] | None:
        """The images wanted when every one is built and up to date, else None."""
        parents = {None: base.name()}
        found: list[Built] = []
        for spec in IMAGES.values():
            if spec.name in wanted:
                current = self._current(spec, parents[spec.built_on])
                if current is None:
                    return None
                parents[spec.name] = spec.reference
                found.append(Built(spec, current, 0.0, cached=True))
        return found

    def _current(self, spec: ImageSpec, parent: str) -> str | None:
        """The id of the image built from these sources on this parent, if it is there."""
        parent_id = self.buildah.image_id(parent)
        stamp = self.stamps / f"{spec.name}.json"
        recorded = json.loads(stamp.read_text()) if stamp.exists() else {}
        current = self.buildah.image_id(spec.reference)
        fresh = parent_id and recorded.get("key") == spec.key(parent_id) and current == recorded.get("id")
        return current if fresh else None

    def _ensure_one(self, spec: ImageSpec, parent: str) -> Built:
        current = self._current(spec, parent)
        if current is not None:
            self.say(f"{spec.name} {spec.reference}: up to date")
            return Built(spec, current, 0.0, cached=True)
        current = self.buildah.image_id(spec.reference)
        key = spec.key(self.buildah.image_id(parent) or "")
        stamp = self.stamps / f"{spec.name}.json"
        log = self.logs / f"{spec.name}.log"
        log.write_text("")
        self.say(f"{spec.name} {spec.reference}: building on {parent} (log: {log})")
        began = time.monotonic()
        try:
            self.buildah.run(
                "bud", "--isolation", "chroot", "--pull-never", "--build-arg", f"BASE={parent}",
                "--volume", f"{ca_bundle()}:/etc/ssl/certs/ca-certificates.crt:ro",
                "--ignorefile", str(spec.ignorefile), "--file", str(spec.dockerfile), "--tag", spec.reference,
                str(ROOT), log=log)
        except BaseException:
            # A failed build leaves its working containers (full copies, with vfs); the node
            # agent's containers (kubetune-node-*) stay.
            for name in self.buildah.containers():
                if not name.startswith(NODE_CONTAINERS):
                    self.buildah.remove_container(name)
            raise
        seconds = time.monotonic() - began
        image_id = self.buildah.image_id(spec.reference)
        if current and current != image_id:
            self.buildah.remove_image(current)
        stamp.write_text(json.dumps({"key": key, "id": image_id, "seconds": round(seconds)}))
        self.say(f"{spec.name} {spec.reference}: built in {seconds:.0f} s")
        return Built(spec, image_id, seconds, cached=False)
