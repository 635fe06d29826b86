"""Benchmark: what skipping the reference model saves. DPO against ORPO and SimPO, which have none.

Every side trains the same random-weight Qwen2-shaped model on the same synthetic preference pairs
(bench/train_throughput.py's inputs) through kubetune's own recipes, exactly as `kubetune-trainer
train` builds them, in fresh processes, alternating rounds, the best of each counting. LoRA DPO
runs a second forward pass per pair through the base with the adapter disabled (the reference);
with `precompute_ref_log_probs` that pass runs once over the data before training (timed apart,
as "setup"); full DPO also keeps a frozen copy of the model. ORPO and SimPO have no reference at
all. Warm-up steps are not timed. Prints a Markdown table.

    .venv/bin/python bench/preference_objectives.py            # LoRA and full, CPU
    .venv/bin/python bench/preference_objectives.py --gpu      # Qwen2.5-1.5B shape at 1,024 tokens
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from train_throughput import CPU_SHAPE, GPU_SHAPE, Shape, meter_callback, peak_flops, versions, write_inputs

# side -> TrainConfig fields
SIDES = {
    "dpo (LoRA)": {"method": "dpo"},
    "dpo, reference precomputed (LoRA)": {"method": "dpo", "precompute_ref_log_probs": True},
    "orpo (LoRA)": {"method": "orpo"},
    "simpo (LoRA)": {"method": "simpo", "beta": 2.0},
    "dpo (full)": {"method": "dpo", "peft": "full"},
    "orpo (full)": {"method": "orpo", "peft": "full"},
    "simpo (full)": {"method": "simpo", "peft": "full", "beta": 2.0},
}


def worker(side: str, workdir: Path, shape: Shape, steps: int, warmup: int) -> dict:
    import torch

    from kubetune_trainer.recipes import recipe_for
    from kubetune_trainer.recipes.config import config_from_dict
    from kubetune_trainer.recipes.distributed import resolve_precision

    os.environ.setdefault("KUBETUNE_CACHE_DIR", str(workdir / "cache"))
    config = config_from_dict(
        {
            "base_model": str(workdir / "model"),
            "dataset": str(workdir / "dataset"),
            "output": str(workdir / "output" / side.replace(" ", "-").replace(",", "").replace("(", "").replace(")", "")),
            "per_device_train_batch_size": shape.batch_size,
            "cutoff_len": shape.seq_len,
            "max_steps": steps,
            "save_steps": steps + 1,
            "logging_steps": steps,
        }
        | SIDES[side]
    )
    precision = resolve_precision(config.precision)
    recipe = recipe_for(config)
    meter = meter_callback(warmup)
    started = time.perf_counter()
    trainer = recipe.trainer(recipe.setup(precision), precision, [meter])
    # TRL precomputes reference log-probs when the train dataloader is first built.
    if config.precompute_ref_log_probs:
        trainer.get_train_dataloader()
    setup = time.perf_counter() - started
    trainer.train()
    seconds, _ = meter.result()
    result = {
        "side": side,
        "seconds": seconds,
        "pairs_per_second": (steps - warmup) * shape.batch_size / seconds,
        "setup_seconds": setup,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }
    if torch.cuda.is_available():
        result["peak_gpu_bytes"] = torch.cuda.max_memory_allocated()
    return result


def run_worker(side: str, workdir: Path, shape: Shape, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--worker", side, "--workdir", str(workdir), "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--batch-size", str(shape.batch_size)]
    if args.gpu:
        command.append("--gpu")
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"{side} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true", help="Qwen2.5-1.5B shape at 1,024 tokens on the GPU")
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps per side (default 6)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed first steps (default 2)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs per side; the best counts")
    parser.add_argument("--batch-size", type=int, default=None, help="per-device batch (default: the shape's)")
    parser.add_argument("--sides", nargs="*", default=list(SIDES), choices=list(SIDES), metavar="SIDE")
    parser.add_argument("--worker", choices=list(SIDES), help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    shape = GPU_SHAPE if args.gpu else CPU_SHAPE
    if args.batch_size:
        shape = Shape(**(asdict(shape) | {"batch_size": args.batch_size}))
    if args.worker:
        print(json.dumps(worker(args.worker, args.workdir, shape, args.steps, args.warmup)))
        return
    with tempfile.TemporaryDirectory(prefix="kubetune-bench-") as tmp:
        workdir = Path(tmp)
        write_inputs(workdir, shape, pairs=shape.batch_size * args.steps)
        runs: dict[str, list[dict]] = {side: [] for side in args.sides}
        # Alternating rounds, best of each: a busy neighbour slows a round, never speeds one up.
        for _ in range(args.rounds):
            for side in args.sides:
                runs[side].append(run_worker(side, workdir, shape, args))
    results = [max(runs[side], key=lambda r: r["pairs_per_second"]) | {"all": runs[side]} for side in args.sides]
    _, device = peak_flops(None)
    print(
        f"Preference objectives, {shape.name}, sequences of {shape.seq_len} tokens, batch {shape.batch_size}, "
        f"{args.steps - args.warmup} timed steps, best of {args.rounds} alternating rounds; device: {device}; "
        f"{versions()}\n"
    )
    print("| method | pairs/s (best) | all rounds | vs DPO of the same kind | setup s | peak RSS | peak GPU memory |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for result in results:
        kind = "full" if "(full)" in result["side"] else "LoRA"
        dpo = next(r for r in results if r["side"] == f"dpo ({kind})") if f"dpo ({kind})" in args.sides else None
        rounds = ", ".join(f"{r['pairs_per_second']:.2f}" for r in result["all"])
        ratio = f"{result['pairs_per_second'] / dpo['pairs_per_second']:.2f}x" if dpo else "—"
        gpu = f"{result['peak_gpu_bytes'] / 2**30:.2f} GiB" if "peak_gpu_bytes" in result else "—"
        print(
            f"| {result['side']} | {result['pairs_per_second']:.2f} | {rounds} | {ratio} "
            f"| {result['setup_seconds']:.1f} | {result['peak_rss_bytes'] / 2**30:.2f} GiB | {gpu} |"
        )


if __name__ == "__main__":
    main()
