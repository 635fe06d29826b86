"""Benchmark: the operator under 1,000 FineTuneJobs, on a real control plane.

A fresh cluster of tests/cluster (etcd, kube-apiserver, kube-controller-manager, kube-scheduler and
the node agent on 127.0.0.1) gets the chart by `helm install`; the operator runs as the chart's
pod under its ServiceAccount, with RBAC enforced. FineTuneJobs whose dataset is a URI (nothing to
wait for) and with `suspend: true` (the Job controller starts no pods, so what is measured is the
operator's path) are created at a steady rate by one client; for each, the time from its create
call's return to the arrival of its training Job on a watch, both on this process's clock. RSS is
the operator process's `VmRSS`/`VmHWM`. Prints a Markdown table.

    .venv/bin/python bench/operator_scale.py --count 1000 --rate 50
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.cluster.client import Kube  # noqa: E402
from tests.cluster.cluster import LocalCluster  # noqa: E402
from tests.cluster.testing import SYSTEM, OperatorPod, free_ports, install  # noqa: E402

NAMESPACE = "bench"
GOALS = {"p50": 0.050, "p99": 0.250, "total": 60.0, "rss": 200.0}


def finetunejob(index: int) -> dict:
    return {
        "apiVersion": "kubetune.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": f"ftj-{index:05d}", "namespace": NAMESPACE},
        "spec": {"method": "sft", "baseModel": "s3://models/base", "dataset": {"uri": "s3://data/prepared/"},
                 "resources": {"gpusPerNode": 8}, "storage": {"secretName": "s3-credentials"}, "suspend": True},
    }


def watch_jobs(kube: Kube, seen: dict[str, float], stop: threading.Event) -> subprocess.Popen:
    """Record when each Job is first seen, from `kubectl get -w` (one JSON object per line)."""
    watcher = subprocess.Popen(["kubectl", "get", "jobs", "-n", NAMESPACE, "-w", "-o",
                                "jsonpath={.metadata.name}{\"\\n\"}"], stdout=subprocess.PIPE, text=True,
                               env=kube.env)

    def read() -> None:
        for line in watcher.stdout:
            name = line.strip()
            if name:
                seen.setdefault(name, time.monotonic())
            if stop.is_set():
                return

    threading.Thread(target=read, daemon=True).start()
    return watcher


def rss_mib(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory of a process, from /proc."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=50.0, help="creations per second (0: as fast as possible)")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()

    cluster = LocalCluster(Path(tempfile.mkdtemp(prefix="operator-scale-")))
    try:
        cluster.start()
        kube = Kube(cluster.control_plane.request, cluster.env())
        version = kube.request("GET", "/version")["gitVersion"]
        ports = free_ports()
        kube.helm(*install(ports, "--set", "operator.logLevel=WARNING", "--set-json",
                           'operator.extraEnv=[{"name": "KUBETUNE_RESYNC_INTERVAL", "value": "600"}]', "--wait"))
        operator = OperatorPod(kube, cluster, ports)
        pod = operator.wait_ready()
        pid = cluster.agent.pid(SYSTEM, pod["metadata"]["name"])
        kube.create_namespace(NAMESPACE)
        idle_rss, _ = rss_mib(pid)
        processes = {name: c.process.pid for name, c in cluster.control_plane.components.items()} | {"operator": pid}
        cpu_before = {name: cpu_seconds(p) for name, p in processes.items()}
        seen: dict[str, float] = {}
        stop = threading.Event()
        watcher = watch_jobs(kube, seen, stop)
        created: dict[str, float] = {}
        path = kube.path("finetunejobs", NAMESPACE)
        began = time.monotonic()
        for index in range(args.count):
            if args.rate:
                delay = began + index / args.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            body = finetunejob(index)
            # One kept-alive connection (the node agent's admin client), as a controller would hold.
            cluster.call(cluster.agent.api.request("POST", path, body))
            created[body["metadata"]["name"]] = time.monotonic()
        created_all = time.monotonic()
        names = [f"ftj-{i:05d}" for i in range(args.count)]
        kube.wait_for(lambda: all(f"{n}-train" in seen for n in names), args.timeout, f"{args.count} training Jobs",
                      interval=0.2)
        stop.set()
        watcher.terminate()
        finished = max(seen[f"{n}-train"] for n in names)
        latencies = [seen[f"{n}-train"] - created[n] for n in names]
        rss, peak = rss_mib(pid)
        cpu = {name: cpu_seconds(p) - cpu_before[name] for name, p in processes.items()}
    finally:
        cluster.stop()

    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    total = finished - began
    print(f"{platform.processor() or platform.machine()}, Python {platform.python_version()}, kube-apiserver "
          f"{version}; {args.count} FineTuneJobs at {args.rate or 'max'}/s (created in {created_all - began:.1f} s)\n")
    print("| measure | value | goal | met |")
    print("|---|---:|---:|---|")
    rows = [
        ("create → Job created, p50", f"{p50 * 1000:.1f} ms", f"≤ {GOALS['p50'] * 1000:.0f} ms", p50 <= GOALS["p50"]),
        ("create → Job created, p99", f"{p99 * 1000:.1f} ms", f"≤ {GOALS['p99'] * 1000:.0f} ms", p99 <= GOALS["p99"]),
        ("create → Job created, max", f"{max(latencies) * 1000:.1f} ms", "", None),
        ("mean", f"{statistics.mean(latencies) * 1000:.1f} ms", "", None),
        ("first create → last Job", f"{total:.1f} s", f"≤ {GOALS['total']:.0f} s", total <= GOALS["total"]),
        ("operator RSS idle / after / peak", f"{idle_rss:.0f} / {rss:.0f} / {peak:.0f} MiB", f"≤ {GOALS['rss']:.0f} MiB",
         peak <= GOALS["rss"]),
    ]
    for name, value, goal, met in rows:
        print(f"| {name} | {value} | {goal} | {'' if met is None else ('yes' if met else 'NO')} |")
    print("\nCPU seconds spent meanwhile: " + ", ".join(f"{name} {seconds:.1f}" for name, seconds in cpu.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
