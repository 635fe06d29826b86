"""The control plane's binaries, built from the Go module proxy into a per-machine cache.

Each Go module under tests/cluster/go pins what it builds in its go.mod (and go.sum): Kubernetes'
kube-apiserver, kube-controller-manager, kube-scheduler and kubectl; etcd; helm. A module's
binaries go to `<cache>/<name>-<key>/`, where the key hashes the module's go.mod, go.sum and
main files, the build flags and the Go version: a second build with the same pins builds nothing,
and a changed pin builds only its module. The cache is `$KUBETUNE_CLUSTER_CACHE`, else
`$XDG_CACHE_HOME/kubetune/cluster`, else `~/.cache/kubetune/cluster`; Go's own module and build
caches make a rebuild after a pin change incremental.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.machine_cache import machine_cache

GO_DIR = Path(__file__).resolve().parent / "go"


@dataclass(frozen=True)
class GoModule:
    name: str  # the folder under tests/cluster/go
    packages: tuple[str, ...]  # what `go build` builds, one binary each
    binaries: tuple[str, ...]

    @property
    def path(self) -> Path:
        return GO_DIR / self.name

    def version_of(self, module: str) -> str:
        """The version the go.mod requires of `module`."""
        found = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", (self.path / "go.mod").read_text(), re.M)
        if found is None:
            raise RuntimeError(f"{self.path / 'go.mod'}: no requirement of {module}")
        return found.group(1)

    def ldflags(self) -> str:
        """-s -w, and the version the binaries report (Kubernetes says v0.0.0-master without it,
        which fails Helm's kubeVersion checks)."""
        flags = ["-s", "-w"]
        if self.name == "kube":
            version = self.version_of("k8s.io/kubernetes")
            major, minor = version.lstrip("v").split(".")[:2]
            flags += [f"-X k8s.io/component-base/version.gitVersion={version}",
                      f"-X k8s.io/component-base/version.gitMajor={major}",
                      f"-X k8s.io/component-base/version.gitMinor={minor}",
                      "-X k8s.io/component-base/version.gitTreeState=clean",
                      f"-X k8s.io/client-go/pkg/version.gitVersion={version}"]
        elif self.name == "helm":
            flags += [f"-X helm.sh/helm/v4/internal/version.version={self.version_of('helm.sh/helm/v4')}",
                      "-X helm.sh/helm/v4/internal/version.gitTreeState=clean"]
        return " ".join(flags)

    def key(self, go_version: str) -> str:
        digest = hashlib.sha256()
        for file in sorted(self.path.iterdir()):
            if file.is_file():
                digest.update(file.name.encode() + b"\0" + file.read_bytes() + b"\0")
        digest.update(f"{self.packages}{self.ldflags()}{go_version}".encode())
        return digest.hexdigest()[:16]


MODULES = (
    GoModule("kube",
             ("k8s.io/kubernetes/cmd/kube-apiserver", "k8s.io/kubernetes/cmd/kube-controller-manager",
              "k8s.io/kubernetes/cmd/kube-scheduler", "k8s.io/kubernetes/cmd/kubectl"),
             ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")),
    GoModule("etcd", (".",), ("etcd",)),
    GoModule("helm", ("helm.sh/helm/v4/cmd/helm",), ("helm",)),
)


def cache_root() -> Path:
    return machine_cache("cluster", "KUBETUNE_CLUSTER_CACHE")


def go_version() -> str:
    if shutil.which("go") is None:
        raise SystemExit("the control plane is built with Go (1.26 or later), and `go` is not on PATH")
    return subprocess.run(["go", "env", "GOVERSION"], check=True, capture_output=True, text=True).stdout.strip()


def build_env() -> dict[str, str]:
    # Static binaries; no VCS stamp (it would change with every commit of this repository); the
    # local toolchain, never one downloaded for a go line.
    return {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-buildvcs=false -mod=readonly", "GOTOOLCHAIN": "local"}


def ensure(module: GoModule, root: Path, version: str, log=print) -> Path:
    """The module's binaries in the cache, built first if missing; returns their folder."""
    target = root / f"{module.name}-{module.key(version)}"
    if all((target / b).is_file() for b in module.binaries):
        return target
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{module.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another build of the same module finishes first
        if all((target / b).is_file() for b in module.binaries):
            return target
        log(f"building {', '.join(module.binaries)} ({module.path.relative_to(GO_DIR.parents[2])}) into {target}")
        began = time.monotonic()
        staging = Path(tempfile.mkdtemp(prefix=f".{module.name}-", dir=root))
        try:
            subprocess.run(["go", "build", "-trimpath", "-ldflags", module.ldflags(), "-o", f"{staging}/",
                            *module.packages], cwd=module.path, env=build_env(), check=True)
            if module.packages == (".",):
                (staging / module.path.name).rename(staging / module.binaries[0])
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        log(f"built {module.name} in {time.monotonic() - began:.0f} s")
    return target


def ensure_all(log=print) -> dict[str, Path]:
    """Every binary of the control plane, by name → path."""
    root, version = cache_root(), go_version()
    paths = {}
    for module in MODULES:
        folder = ensure(module, root, version, log)
        paths |= {binary: folder / binary for binary in module.binaries}
    return paths


if __name__ == "__main__":
    for name, path in ensure_all(lambda message: print(message, file=sys.stderr)).items():
        print(f"{name}: {path}")
