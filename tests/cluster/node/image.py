"""A Runtime that runs containers from their image's root filesystem, as a kubelet would.

For an image built here (`make images`, in the buildah storage of tests/images), the container
runs in a chroot into a container of that image: its root read-only when the pod says so, the
pod's volumes bound at their mount paths, /etc/hosts with the cluster's Services, the image's
env under the pod's, the image's entrypoint programs, and the pod's (else the image's) user. Any
other image, and any container that `command_map` replaces with a fake, runs as a host process.
The network is this machine's, as for host processes.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from tests.cluster.node.runtime import Container, ContainerSpec, HostContainer, HostProcess, StartError
from tests.images.build import NODE_CONTAINERS
from tests.images.buildah import Buildah, Image

CHROOT = Path(__file__).with_name("chroot.py")


class ImageRootfs:
    def __init__(self, images: Iterable[str], host: HostProcess, buildah: Buildah | None = None,
                 command_map: Callable[[str, list[str]], list[str] | None] | None = None):
        self.buildah = buildah or Buildah()
        self.command_map = command_map
        # The mapping is decided here, before any image is entered, and handed to the host
        # process as its own command_map, so it replaces the argv after the mount paths are
        # rewritten, as it does with no images.
        self._mapped: list[str] | None = None
        host.command_map = lambda _namespace, _argv: self._mapped
        self.host = host
        self.roots: dict[str, tuple[Path, Image]] = {}
        for image in images:
            self.roots[image] = (self.buildah.rootfs(image, container_name(image)), self.buildah.inspect(image))

    def start(self, spec: ContainerSpec) -> Container:
        mapped = self.command_map(spec.pod.split("/", 1)[0], spec.argv) if self.command_map else None
        if mapped is not None or spec.image not in self.roots:
            self._mapped = mapped
            try:
                return self.host.start(spec)
            finally:
                self._mapped = None
        root, image = self.roots[spec.image]
        env = image.env | spec.env
        if not _found(root, spec.argv[0], env.get("PATH", "")):
            raise StartError(f'exec: "{spec.argv[0]}": executable file not found in $PATH')
        uid, gid = spec.user or image.uid_gid
        spec.termination_log.unlink(missing_ok=True)
        spec.termination_log.touch()
        spec.termination_log.chmod(0o666)  # as the kubelet makes it: any user of the image writes it
        files = {"/etc/hosts": _hosts_file(spec)}
        if Path("/etc/resolv.conf").is_file():
            files["/etc/resolv.conf"] = Path("/etc/resolv.conf")
        plan = {"root": str(root), "binds": {path: str(host) for path, host in spec.mounts.items()}
                | {spec.termination_message_path: str(spec.termination_log)},
                "files": {path: str(host) for path, host in files.items()},
                "read_only_root": spec.read_only_root, "uid": uid, "gid": gid, "env": env, "argv": spec.argv,
                "cwd": spec.working_dir or image.working_dir}
        plan_file = spec.workdir / f"{spec.name}.chroot.json"
        plan_file.write_text(json.dumps(plan))
        argv = ["unshare", "--mount", "--propagation", "private", "--", sys.executable, "-P", str(CHROOT),
                str(plan_file)]
        return HostContainer(spec, argv, {"PATH": os.environ.get("PATH", os.defpath)}, str(spec.workdir))

    def close(self, remove: bool = False) -> None:
        """Unmount the containers that hold the root filesystems; they stay for the next cluster
        unless `remove` (vfs holds each as a full copy of its image)."""
        for image in self.roots:
            self.buildah.run("rm" if remove else "umount", container_name(image), check=False)


def container_name(image: str) -> str:
    return NODE_CONTAINERS + image.rsplit("/", 1)[-1].replace(":", "-")


def _found(root: Path, program: str, path: str) -> bool:
    if "/" in program:
        return os.path.lexists(root / program.lstrip("/"))
    return any(os.path.lexists(root / folder.lstrip("/") / program) for folder in path.split(":") if folder)


def _hosts_file(spec: ContainerSpec) -> Path:
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    lines += [f"{address}\t{name}" for name, address in spec.hosts.items()]
    hosts = spec.workdir / f"{spec.name}.hosts"
    hosts.write_text("\n".join(lines) + "\n")
    return hosts
