"""Benchmark: the operator under 1,000 FineTuneJobs.

The real operator (`kubetune operator`, a subprocess) watches one namespace of the emulated API
server (tests/integration/harness: kmock with API-server behaviour, in this process); FineTuneJobs
whose dataset is a URI (so nothing waits) are created at a steady rate, and for each the time from
its admission to the admission of its training Job is taken from the emulator's clock. No kubelet
runs: the Jobs stay Pending. Prints a Markdown table.

    .venv/bin/python bench/operator_scale.py --count 1000 --rate 50
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from harness.cluster import Cluster  # noqa: E402
from harness.operator_process import OperatorProcess  # noqa: E402

from kubetune_operator.runtime.kube import CUSTOM_RESOURCES  # noqa: E402

NAMESPACE = "bench"
GOALS = {"p50": 0.050, "p99": 0.250, "total": 60.0, "rss": 200.0}


def finetunejob(index: int) -> dict:
    return {
        "apiVersion": "kubetune.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": f"ftj-{index:05d}", "namespace": NAMESPACE},
        "spec": {"method": "sft", "baseModel": "s3://models/base", "dataset": {"uri": "s3://data/prepared/"},
                 "resources": {"gpusPerNode": 8}, "storage": {"secretName": "s3-credentials"}},
    }


async def create_all(cluster: Cluster, count: int, rate: float) -> None:
    """Create at `rate` per second (0: as fast as one client can), never bunching up after a delay."""
    started = time.monotonic()
    for index in range(count):
        if rate:
            delay = started + index / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        await cluster.api.create(CUSTOM_RESOURCES["finetunejobs"], NAMESPACE, finetunejob(index))


def rss_mib(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory of a process, from /proc."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=50.0, help="creations per second (0: as fast as possible)")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()

    # Specs are valid by construction; the emulator's CEL would be counted as operator latency.
    cluster = Cluster(validate=False)
    work = Path(tempfile.mkdtemp(prefix="operator-scale-"))
    try:
        cluster.create_namespace(NAMESPACE)
        operator = OperatorProcess(cluster.write_kubeconfig(work / "kubeconfig"), NAMESPACE, work / "operator.log",
                                   env={"KUBETUNE_ARTIFACT_ROOT": "s3://artifacts/kubetune",
                                        "KUBETUNE_RESYNC_INTERVAL": "600"},
                                   log_level="WARNING")
        operator.start()
        idle_rss, _ = rss_mib(operator.process.pid)
        began = time.monotonic()
        cluster.call(create_all(cluster, args.count, args.rate), timeout=args.timeout)
        created = time.monotonic()
        made = cluster.emulator.created_at
        names = [f"ftj-{i:05d}" for i in range(args.count)]
        cluster.wait_for(lambda: all(("jobs", NAMESPACE, f"{n}-train") in made for n in names), args.timeout,
                         f"{args.count} training Jobs", interval=0.2)
        finished = max(made[("jobs", NAMESPACE, f"{n}-train")] for n in names)
        latencies = [made[("jobs", NAMESPACE, f"{n}-train")] - made[("finetunejobs", NAMESPACE, n)] for n in names]
        rss, peak = rss_mib(operator.process.pid)
        operator.stop()
    finally:
        cluster.close()

    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    total = finished - began
    print(f"{platform.processor() or platform.machine()}, Python {platform.python_version()}; "
          f"{args.count} FineTuneJobs at {args.rate or 'max'}/s (created in {created - began:.1f} s)\n")
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
