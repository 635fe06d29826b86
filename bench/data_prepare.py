"""Benchmark: `kubetune-trainer data prepare` beside `datasets.load_dataset("json")` + `map`.

Both sides turn the same synthetic LLaMA-Factory alpaca ranking rows (instruction, input, chosen,
rejected, subtype) into canonical TRL conversational rows with metadata, check them, split
train/test and write JSONL. Each side runs in its own process, so that its peak RSS is its own;
rows/s counts the work after imports. Prints a Markdown table.

    .venv/bin/python bench/data_prepare.py --rows 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOPICS = ["天气", "订单", "退款", "shipping", "password", "invoice", "发票", "delivery", "账户", "warranty"]
SUBTYPES = ["空指针", "越界访问", "资源泄漏", "除零", "repetition", "overreach"]
TEST_FRACTION = 0.1
SEED = 42


def generate(path: Path, rows: int) -> None:
    rng = random.Random(SEED)
    with open(path, "w", encoding="utf-8") as handle:
        for index in range(rows):
            topic = rng.choice(TOPICS)
            answer = f"关于{topic}的回答 {index}: " + " ".join(
                rng.choice(TOPICS) for _ in range(rng.randint(5, 30))
            )
            row = {
                "instruction": f"请回答用户关于{topic}的问题。Answer the question about {topic}.",
                "input": f"case-{index}: {topic}?" if index % 3 else "",
                "chosen": answer,
                "rejected": (answer[:40] + "，") * rng.randint(2, 6),
                "subtype": rng.choice(SUBTYPES),
            }
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def run_kubetune(source: Path, output: Path) -> None:
    from kubetune_trainer.data.options import PrepareOptions
    from kubetune_trainer.data.prepare import prepare
    from kubetune_trainer.progress import ProgressReporter

    started = time.perf_counter()
    manifest = prepare(
        PrepareOptions(
            kind="preference",
            output=str(output),
            sources=(str(source),),
            format="alpaca",
            test_fraction=TEST_FRACTION,
            stratify_by="subtype",
            seed=SEED,
        ),
        ProgressReporter(),
    )
    report(time.perf_counter() - started, manifest["counts"]["kept"])


def run_datasets(source: Path, output: Path) -> None:
    import datasets

    datasets.disable_progress_bars()
    name = str(source)

    def normalize(row: dict, index: int) -> dict:
        user = "\n".join(part for part in (row["instruction"], row["input"]) if part)
        chosen, rejected = row["chosen"], row["rejected"]
        valid = all(isinstance(t, str) and t.strip() for t in (user, chosen, rejected)) and chosen != rejected
        return {
            "prompt": [{"role": "user", "content": user}],
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
            "metadata": {"source": f"{name}:{index + 1}", "subtype": row["subtype"]},
            "valid": valid,
        }

    started = time.perf_counter()
    loaded = datasets.load_dataset("json", data_files=name, split="train", cache_dir=str(output / "cache"))
    mapped = loaded.map(normalize, with_indices=True, remove_columns=loaded.column_names)
    report(time.perf_counter() - started, len(mapped), "load_map")
    kept = mapped.filter(lambda row: row["valid"]).remove_columns("valid")
    splits = kept.train_test_split(test_size=TEST_FRACTION, seed=SEED)
    for split_name, part in splits.items():
        part.to_json(output / f"{split_name}.jsonl", force_ascii=False)
    report(time.perf_counter() - started, len(kept))


def peak_rss_mib() -> float:
    """This process image's high-water RSS. Not ru_maxrss: Linux carries that over exec from the parent."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def report(seconds: float, rows: int, stage: str = "all") -> None:
    print(json.dumps({"stage": stage, "seconds": seconds, "rows": rows, "peak_rss_mib": peak_rss_mib()}))


def measure(side: str, source: Path, work: Path) -> dict:
    output = work / side
    output.mkdir()
    env = {**os.environ, "HF_DATASETS_CACHE": str(output / "cache"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, __file__, "--worker", side, "--source", str(source), "--output", str(output)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode:
        sys.exit(f"{side} failed:\n{done.stderr[-4000:]}")
    stages = [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{"stage"')]
    return {stage.pop("stage"): stage for stage in stages}


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--worker", choices=("kubetune", "datasets"), help=argparse.SUPPRESS)
    parser.add_argument("--source", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        (run_kubetune if args.worker == "kubetune" else run_datasets)(args.source, args.output)
        return
    import datasets
    import orjson

    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        work = Path(tmp)
        source = work / "rows.jsonl"
        generate(source, args.rows)
        size_mib = source.stat().st_size / 2**20
        ours = measure("kubetune", source, work)
        theirs = measure("datasets", source, work)
    print(
        f"{args.rows} synthetic alpaca ranking rows ({size_mib:.0f} MiB JSONL); {cpu_model()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, datasets {datasets.__version__}, "
        f"orjson {orjson.__version__}\n"
    )
    print("| pipeline | rows | seconds | rows/s | peak RSS (MiB) |")
    print("|---|---:|---:|---:|---:|")
    rows = (
        ("kubetune data prepare (convert, check, dedupe, stratified split, write, manifest)", ours["all"]),
        ('datasets load_dataset("json") + map + filter + split + to_json', theirs["all"]),
        ('datasets load_dataset("json") + map only', theirs["load_map"]),
    )
    for label, result in rows:
        rate = result["rows"] / result["seconds"]
        print(
            f"| {label} | {result['rows']} | {result['seconds']:.1f} | {rate:,.0f} | {result['peak_rss_mib']:.0f} |"
        )
    ours_rate = ours["all"]["rows"] / ours["all"]["seconds"]
    for label, result in (
        ("the whole datasets pipeline", theirs["all"]),
        ("load + map only", theirs["load_map"]),
    ):
        print(
            f"\nagainst {label}: {ours_rate / (result['rows'] / result['seconds']):.2f}x the rows/s at "
            f"{ours['all']['peak_rss_mib'] / result['peak_rss_mib']:.2f}x the peak RSS",
            end="",
        )
    print()


if __name__ == "__main__":
    main()
