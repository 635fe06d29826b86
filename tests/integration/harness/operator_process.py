"""The real operator (`kubetune operator`) as a subprocess against the emulated cluster."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

PROGRESS_KEY = "integration-test-progress-key-0123456789"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class OperatorProcess:
    """Start, kill and restart the operator; its log is kept in `log_path` across restarts."""

    def __init__(self, kubeconfig: Path, namespace: str, log_path: Path, env: dict[str, str] | None = None,
                 log_level: str = "INFO"):
        self.namespace = namespace
        self.log_level = log_level
        self.log_path = log_path
        self.progress_port, self.metrics_port, self.health_port = free_port(), free_port(), free_port()
        self.env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "KUBETUNE_PROGRESS_KEY": PROGRESS_KEY,
            "KUBETUNE_PROGRESS_BASE_URL": f"http://127.0.0.1:{self.progress_port}",
            "KUBETUNE_PROGRESS_PATCH_INTERVAL": "0.2",
            "KUBETUNE_RESYNC_INTERVAL": "2",
            **(env or {}),
        }
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def start(self, timeout: float = 30) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "kubetune_operator", "--log-level", self.log_level, "operator",
                 "--namespace", self.namespace, "--progress-port", str(self.progress_port),
                 "--metrics-port", str(self.metrics_port), "--health-port", str(self.health_port)],
                env=self.env, stdout=log, stderr=subprocess.STDOUT,
            )
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"operator exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=1) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.05)
        raise AssertionError(f"operator not healthy after {timeout}s:\n{self.log()[-4000:]}")

    def kill(self) -> None:
        """SIGKILL: no cleanup, as when a node dies."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as answer:
            return answer.read().decode()
