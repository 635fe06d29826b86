"""python -m tests.cluster build | up | down | serve  [--dir .cluster]

build  the pinned binaries into the per-machine cache (nothing when they are there)
up     a fresh cluster in the background; writes DIR/env (`source DIR/env`: KUBECONFIG, and PATH
       with the built kubectl and helm)
down   stop it (pods, node agent, control plane) and delete DIR
serve  run a cluster in the foreground until SIGTERM or Ctrl-C (what `up` starts)
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.cluster import build

READY, PID, ENV = "ready", "pid", "env"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _pid(folder: Path) -> int | None:
    try:
        pid = int((folder / PID).read_text())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def up(folder: Path, timeout: float) -> int:
    if _pid(folder):
        print(f"a cluster runs already ({folder}); `source {folder / ENV}`, or `make cluster-down` first")
        return 0
    build.ensure_all(lambda message: print(message, file=sys.stderr))
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "logs").mkdir(parents=True)
    with open(folder / "logs" / "cluster.log", "ab") as log:
        process = subprocess.Popen([sys.executable, "-m", "tests.cluster", "serve", "--dir", str(folder)],
                                   stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    (folder / PID).write_text(str(process.pid))
    deadline = time.monotonic() + timeout
    while not (folder / READY).exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            tail = (folder / "logs" / "cluster.log").read_text(errors="replace")[-4000:]
            print(f"the cluster did not start; {folder / 'logs'} has every component's log. The last lines:\n{tail}",
                  file=sys.stderr)
            return 1
        time.sleep(0.5)
    print(f"cluster up: `source {folder / ENV}` for KUBECONFIG, kubectl and helm; logs in {folder / 'logs'}")
    return 0


def down(folder: Path, timeout: float) -> int:
    pid = _pid(folder)
    if pid:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(folder, ignore_errors=True)
    print("cluster down" if pid else "no cluster was running")
    return 0


def serve(folder: Path) -> int:
    from tests.cluster.cluster import LocalCluster
    from tests.cluster.control_plane import environment_lines

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    cluster = LocalCluster(folder)
    try:
        cluster.start()
        (folder / ENV).write_text(environment_lines(cluster.folder, cluster.path_dirs()))
        (folder / READY).write_text(cluster.control_plane.server + "\n")
        print(f"serving {cluster.control_plane.server}", flush=True)
        stop.wait()
    finally:
        (folder / READY).unlink(missing_ok=True)
        cluster.stop()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["build", "up", "down", "serve"])
    parser.add_argument("--dir", type=Path, default=Path(".cluster"), help="the cluster's folder (default .cluster)")
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    folder = args.dir.resolve()
    if args.command == "build":
        for name, path in build.ensure_all(lambda message: print(message, file=sys.stderr)).items():
            print(f"{name}: {path}")
        return 0
    return {"up": lambda: up(folder, args.timeout), "down": lambda: down(folder, args.timeout),
            "serve": lambda: serve(folder)}[args.command]()


if __name__ == "__main__":
    sys.exit(main())
