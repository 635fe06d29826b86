"""etcd, kube-apiserver, kube-controller-manager and kube-scheduler on 127.0.0.1, as processes.

Everything lives in one folder: certificates (`pki/`), etcd's data, kubeconfigs, and each
component's log in `logs/`. The API server enforces RBAC, runs the default admission plugins
(PodSecurity and ServiceAccount among them) and signs ServiceAccount tokens; the controller
manager runs the controllers a training platform meets (Jobs, garbage collection, namespaces,
ServiceAccounts and their tokens, Deployments and ReplicaSets, ...), each under its own
ServiceAccount.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.cluster import pki as certificates

CONTROLLERS = (
    "job-controller", "garbage-collector-controller", "namespace-controller", "serviceaccount-controller",
    "serviceaccount-token-controller", "root-ca-certificate-publisher-controller", "replicaset-controller",
    "deployment-controller", "pod-garbage-collector-controller", "ttl-after-finished-controller",
    "clusterrole-aggregation-controller", "disruption-controller",
    # Takes the not-ready taint off the nodes once the node agent reports them Ready.
    "node-lifecycle-controller",
)
SERVICE_CIDR = "10.0.0.0/24"
RBAC_WARM_UP = 15  # seconds after a restarted API server is ready
ISSUER = "https://kubernetes.default.svc.cluster.local"
# Every request of a ServiceAccount of this namespace is written to logs/audit.log: tests hold
# the operator's against RBAC (a 403 fails them) and read which calls it made.
AUDITED_NAMESPACE = "kubetune-system"
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1", "kind": "Policy", "omitStages": ["RequestReceived"],
    "rules": [{"level": "Metadata", "userGroups": [f"system:serviceaccounts:{AUDITED_NAMESPACE}"]},
              {"level": "None"}],
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Component:
    name: str
    argv: list[str]
    log: Path
    process: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            # A session of its own: Ctrl-C in a terminal reaches the supervisor, which stops these in order.
            self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, grace: float = 15) -> None:
        if not self.running():
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


@dataclass
class ControlPlane:
    folder: Path
    binaries: dict[str, Path]
    api_port: int = 0
    components: dict[str, Component] = field(default_factory=dict)
    restarts: list[tuple[datetime.datetime, datetime.datetime]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.folder = self.folder.resolve()
        self.logs = self.folder / "logs"
        self.api_port = self.api_port or free_port()
        self.etcd_port, self.etcd_peer_port = free_port(), free_port()

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def audit_log(self) -> Path:
        return self.logs / "audit.log"

    @property
    def pki(self) -> certificates.Pki:
        return certificates.Pki(self.folder / "pki")

    def kubeconfig(self, who: str = "admin") -> Path:
        return self.folder / f"{who}.kubeconfig"

    # --- start and stop -----------------------------------------------------------------------

    def start(self, timeout: float = 240) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        pki = certificates.make(self.folder / "pki")
        for stem, *_ in certificates.CLIENTS:
            self._write_kubeconfig(self.kubeconfig(stem), pki, stem)
        self._define(pki)
        deadline = time.monotonic() + timeout
        self.components["etcd"].start()
        self._wait("etcd", deadline, lambda: _get(f"http://127.0.0.1:{self.etcd_port}/health"))
        self.components["kube-apiserver"].start()
        self._wait("kube-apiserver", deadline, lambda: self.request("GET", "/readyz") == "ok")
        self.components["kube-controller-manager"].start()
        self.components["kube-scheduler"].start()
        # The ServiceAccount controller has run once the default namespace has its `default` account.
        self._wait("kube-controller-manager", deadline,
                   lambda: self.request("GET", "/api/v1/namespaces/default/serviceaccounts/default", missing=None))

    def stop(self) -> None:
        for name in ("kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"):
            if name in self.components:
                self.components[name].stop()

    def restart_apiserver(self, timeout: float = 120) -> None:
        """Stop kube-apiserver (SIGTERM) and start it again on the same port and data."""
        apiserver = self.components["kube-apiserver"]
        began = datetime.datetime.now(datetime.UTC)
        apiserver.stop()
        apiserver.start()
        self._wait("kube-apiserver", time.monotonic() + timeout, lambda: self.request("GET", "/readyz") == "ok")
        # A restarted server refuses requests for a moment while its RBAC cache fills: the window
        # in which a 403 says nothing about the chart's Role.
        self.restarts.append((began, datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=RBAC_WARM_UP)))

    def _define(self, pki: certificates.Pki) -> None:
        bins = {name: str(path) for name, path in self.binaries.items()}
        policy = self.folder / "audit-policy.yaml"
        policy.write_text(yaml.safe_dump(AUDIT_POLICY))
        common = ["--v=1"]
        self.components = {
            "etcd": Component("etcd", [
                bins["etcd"], "--name=kubetune-test", f"--data-dir={self.folder / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{self.etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{self.etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{self.etcd_peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{self.etcd_peer_port}",
                f"--initial-cluster=kubetune-test=http://127.0.0.1:{self.etcd_peer_port}",
                "--listen-metrics-urls=", "--unsafe-no-fsync", "--quota-backend-bytes=4294967296",
                "--log-level=warn",
            ], self.logs / "etcd.log"),
            "kube-apiserver": Component("kube-apiserver", [
                bins["kube-apiserver"], *common,
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={self.api_port}",
                f"--tls-cert-file={pki.cert('apiserver')}", f"--tls-private-key-file={pki.key('apiserver')}",
                f"--client-ca-file={pki.ca}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--service-account-issuer={ISSUER}",
                f"--service-account-key-file={pki.service_account_public_key}",
                f"--service-account-signing-key-file={pki.service_account_key}",
                "--authorization-mode=RBAC",
                "--allow-privileged=true",
                # The `kubernetes` Service's endpoint would be 127.0.0.1, which an EndpointSlice may not hold.
                "--endpoint-reconciler-type=none",
                "--profiling=false",
                f"--audit-policy-file={policy}", f"--audit-log-path={self.audit_log}", "--audit-log-format=json",
                "--audit-log-mode=blocking",
            ], self.logs / "kube-apiserver.log"),
            "kube-controller-manager": Component("kube-controller-manager", [
                bins["kube-controller-manager"], *common,
                f"--kubeconfig={self.kubeconfig('controller-manager')}",
                f"--authentication-kubeconfig={self.kubeconfig('controller-manager')}",
                f"--authorization-kubeconfig={self.kubeconfig('controller-manager')}",
                "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
                "--leader-elect=false", f"--controllers={','.join(CONTROLLERS)}",
                "--use-service-account-credentials=true",
                f"--root-ca-file={pki.ca}", f"--service-account-private-key-file={pki.service_account_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--concurrent-job-syncs=20", "--profiling=false",
            ], self.logs / "kube-controller-manager.log"),
            "kube-scheduler": Component("kube-scheduler", [
                bins["kube-scheduler"], *common,
                f"--kubeconfig={self.kubeconfig('scheduler')}",
                f"--authentication-kubeconfig={self.kubeconfig('scheduler')}",
                f"--authorization-kubeconfig={self.kubeconfig('scheduler')}",
                "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
                "--leader-elect=false", "--profiling=false",
            ], self.logs / "kube-scheduler.log"),
        }

    def _wait(self, name: str, deadline: float, probe) -> None:
        component = self.components[name]
        while time.monotonic() < deadline:
            if not component.running():
                raise RuntimeError(f"{name} exited with {component.process.returncode}:\n{component.tail()}")
            try:
                if probe():
                    return
            except (OSError, urllib.error.URLError, ValueError):
                pass
            time.sleep(0.25)
        raise RuntimeError(f"{name} not ready in time; its log ends:\n{component.tail()}")

    def _write_kubeconfig(self, path: Path, pki: certificates.Pki, stem: str) -> None:
        def data(file: Path) -> str:
            return base64.b64encode(file.read_bytes()).decode()

        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "kubetune-test",
            "clusters": [{"name": "kubetune-test", "cluster": {"server": self.server,
                                                              "certificate-authority-data": data(pki.ca)}}],
            "users": [{"name": stem, "user": {"client-certificate-data": data(pki.cert(stem)),
                                              "client-key-data": data(pki.key(stem))}}],
            "contexts": [{"name": "kubetune-test", "context": {"cluster": "kubetune-test", "user": stem}}],
        }))
        path.chmod(0o600)

    # --- a small admin client, for readiness and set-up ------------------------------------------

    def ssl_context(self, who: str = "admin") -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki.ca))
        context.load_cert_chain(str(self.pki.cert(who)), str(self.pki.key(who)))
        return context

    def request(self, method: str, path: str, body: Any = None, missing: Any = ..., timeout: float = 10,
                content_type: str = "application/json") -> Any:
        """One call as the admin; JSON in and out (text for non-JSON answers). A 404 returns
        `missing` when given, else raises."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.server + path, data=data, method=method,
                                         headers={"Content-Type": content_type, "Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, context=self.ssl_context(), timeout=timeout) as answer:
                text = answer.read().decode()
        except urllib.error.HTTPError as exc:
            if exc.code == 404 and missing is not ...:
                return missing
            raise
        try:
            return json.loads(text)
        except ValueError:
            return text


def _get(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as answer:
        return answer.status == 200


def environment_lines(folder: Path, path_dirs: list[Path]) -> str:
    """What `.cluster/env` holds: KUBECONFIG, kubectl's discovery cache beside it (each cluster is
    new), and PATH with the built kubectl and helm first."""
    path = os.pathsep.join(str(d) for d in path_dirs)
    return (f"export KUBECONFIG={folder / 'admin.kubeconfig'}\n"
            f"export KUBECACHEDIR={folder / 'kubectl-cache'}\n"
            f"export PATH={path}{os.pathsep}$PATH\n")
