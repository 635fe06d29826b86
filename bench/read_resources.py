"""Benchmark: reading and validating resource documents, as `kubetune run` and `render` do first.

A file of small documents (by default 355,000 of them, about 50 MB: PreferenceDatasets, each with
its own name and source URI, and every fifth a FineTuneJob on the one before) is read
(`cli.documents.load_documents`: YAML 1.2, duplicate keys, alias budget), validated against the CRD schemas
and their CEL rules (`validate_all`) and ordered by references (`graph.order`). The same is done
on the file's first 1/8, 1/4 and 1/2: a flat documents/s down the table is a linear reader.

Peers, in the same run: PyYAML's pure-Python `safe_load_all` (the former reader, YAML 1.1) on the
1/8 file, and validation that hands every CEL rule to celpy (no cache by what a rule reads, no
string shortcuts) on the first 2,000 documents. Each row runs in a process of its own, so its peak
RSS is its own. Prints a Markdown table.

    .venv/bin/python bench/read_resources.py --documents 355000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

PEER_SAMPLE = 2000


def document(index: int) -> str:
    if index % 5 == 4:
        return (
            "---\napiVersion: kubetune.dev/v1alpha1\nkind: FineTuneJob\n"
            f"metadata: {{name: j{index:06d}}}\n"
            f"spec: {{method: sft, baseModel: file://./models/base, dataset: {{preferenceDataset: d{index - 1:06d}}}}}\n"
        )
    return (
        "---\napiVersion: kubetune.dev/v1alpha1\nkind: PreferenceDataset\n"
        f"metadata: {{name: d{index:06d}}}\n"
        f"spec: {{kind: sft, sources: [{{uri: file://./data/part-{index:06d}.jsonl}}]}}\n"
    )


def generate(path: Path, documents: int) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for index in range(documents):
            handle.write(document(index))


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(mode: str, path: Path) -> dict:
    from kubetune_operator.builders import graph
    from kubetune_operator.cli.documents import load_documents, validate_all

    timings: dict[str, float] = {}
    started = time.perf_counter()
    if mode == "pyyaml":
        import yaml

        count = sum(1 for body in yaml.safe_load_all(path.read_text(encoding="utf-8")) if body is not None)
        timings["read"] = time.perf_counter() - started
        return {"documents": count, **timings, "rss": peak_rss_mib()}
    documents = load_documents([path])
    timings["read"] = time.perf_counter() - started
    if mode == "celpy":
        import celpy

        from kubetune_operator.api import validation

        def every_rule_by_celpy(rule, value, old):
            activation = {"self": celpy.json_to_cel(value)}
            if old is not None:
                activation["oldSelf"] = celpy.json_to_cel(old)
            return bool(validation._program(rule).evaluate(activation))

        validation._evaluate = every_rule_by_celpy
        documents = documents[:PEER_SAMPLE]
    mark = time.perf_counter()
    resources = validate_all(documents)
    timings["validate"] = time.perf_counter() - mark
    mark = time.perf_counter()
    graph.order(resources, require_references=mode != "celpy")
    timings["order"] = time.perf_counter() - mark
    return {"documents": len(documents), **timings, "rss": peak_rss_mib()}


def run_worker(mode: str, path: Path) -> dict:
    result = subprocess.run(
        [sys.executable, __file__, "--worker", mode, str(path)], capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", type=int, default=355_000)
    parser.add_argument("--worker", nargs=2, metavar=("MODE", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], Path(args.worker[1]))))
        return

    versions = {name: metadata.version(name) for name in ("PyYAML", "cel-python", "jsonschema")}
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; "
          f"Python {platform.python_version()}, " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    print()
    print("| what | documents | MB | read s | validate s | order s | documents/s | peak RSS (MiB) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|", flush=True)
    with tempfile.TemporaryDirectory(prefix="read-resources-") as scratch:
        files = {}
        for share in (8, 4, 2, 1):
            files[share] = Path(scratch) / f"resources-{share}.yaml"
            generate(files[share], args.documents // share)
        for share in (8, 4, 2, 1):
            part = f"1/{share}" if share > 1 else "whole file"
            row(f"kubetune: read + validate + order, {part}", files[share], run_worker("kubetune", files[share]))
        row("peer: PyYAML safe_load_all (YAML 1.1, pure Python), read only, 1/8", files[8], run_worker("pyyaml", files[8]))
        row(f"peer: every CEL rule by celpy, first {PEER_SAMPLE} documents (validate + order only)", files[8],
            run_worker("celpy", files[8]), reading=False)
    print(f"\nload at the end {os.getloadavg()[0]:.1f}")


def seconds(result: dict, step: str) -> str:
    return f"{result[step]:.1f}" if step in result else "–"


def row(label: str, path: Path, result: dict, reading: bool = True) -> None:
    total = result.get("validate", 0.0) + result.get("order", 0.0) + (result["read"] if reading else 0.0)
    print(
        f"| {label} | {result['documents']:,} | {path.stat().st_size / 1e6:.1f} | {result['read']:.1f} | "
        f"{seconds(result, 'validate')} | {seconds(result, 'order')} | "
        f"{result['documents'] / total:,.0f} | {result['rss']:.0f} |",
        flush=True,
    )


if __name__ == "__main__":
    main()
