"""The whole test cluster in one object: the control plane's processes and the node agent, whose
event loop runs in a background thread (tests reach it with `call`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any, TypeVar

import kopf

from kubetune_operator.runtime.kube import KubeApi
from tests.cluster import build
from tests.cluster.control_plane import ControlPlane
from tests.cluster.node.agent import NodeAgent
from tests.cluster.node.image import ImageRootfs
from tests.cluster.node.runtime import HostProcess
from tests.images.build import Builder

T = TypeVar("T")
log = logging.getLogger(__name__)


class LocalCluster:
    """`start()` builds (or finds) the binaries, starts the control plane and the node agent;
    `stop()` ends them. `folder` keeps certificates, data, kubeconfigs, logs and pod folders."""

    def __init__(self, folder: Path, api_port: int = 0,
                 command_map: Callable[[str, list[str]], list[str] | None] | None = None,
                 images: Iterable[str] | None = None):
        self.folder = Path(folder).resolve()
        self.binaries = build.ensure_all(lambda message: print(message, file=sys.stderr))
        self.control_plane = ControlPlane(self.folder, self.binaries, api_port)
        # The venv's console scripts (kubetune, kubetune-trainer) play the images' commands, except
        # for the images named (operator, trainer, eval; default $KUBETUNE_CLUSTER_IMAGES): those
        # are built (or found built) and their pods run from their own root filesystem.
        if images is None:
            images = os.environ.get("KUBETUNE_CLUSTER_IMAGES", "").replace(",", " ").split()
        self.runtime: HostProcess | ImageRootfs = HostProcess(extra_path=[Path(sys.executable).parent],
                                                              command_map=None if images else command_map)
        if images:
            built = Builder(say=lambda message: print(message, file=sys.stderr)).ensure(list(images))
            self.runtime = ImageRootfs([b.spec.reference for b in built if b.spec.name in images], self.runtime,
                                       command_map=command_map)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.agent: NodeAgent | None = None
        self._thread: threading.Thread | None = None

    @property
    def kubeconfig(self) -> Path:
        return self.control_plane.kubeconfig("admin")

    def path_dirs(self) -> list[Path]:
        """Folders with kubectl and helm, for PATH."""
        return sorted({self.binaries[name].parent for name in ("kubectl", "helm")})

    def env(self) -> dict[str, str]:
        """This process's environment pointed at the cluster: KUBECONFIG, and PATH with kubectl and helm."""
        path = os.pathsep.join([*(str(d) for d in self.path_dirs()), os.environ.get("PATH", os.defpath)])
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig), "KUBECACHEDIR": str(self.folder / "kubectl-cache"),
                "PATH": path}

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.control_plane.start()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="node-agent", daemon=True)
        self._thread.start()
        pki = self.control_plane.pki
        api = KubeApi(lambda: kopf.ConnectionInfo(server=self.control_plane.server, ca_path=str(pki.ca),
                                                  certificate_path=str(pki.cert("node-agent")),
                                                  private_key_path=str(pki.key("node-agent"))))
        self.agent = NodeAgent(api, self.control_plane.api_port, self.folder / "pods", self.runtime)
        self.call(self.agent.start())

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self) -> None:
        if self.agent is not None:
            try:
                self.call(self.agent.stop(), timeout=60)
                self.call(self.agent.api.close())
            except Exception:  # the control plane must stop even so
                log.exception("node agent did not stop cleanly")
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
        self.control_plane.stop()
        if isinstance(self.runtime, ImageRootfs):
            self.runtime.close()
