"""Benchmark: DPO+LoRA training throughput of kubetune's recipe beside TRL's DPOTrainer defaults.

Both sides train the same random-weight Qwen2-shaped model on the same synthetic preference pairs
(text from tests/fixtures/data) with the same LoRA adapter, batch size and sequence length, one after the
other in fresh processes. TRL keeps every other default of DPOConfig (bf16 autocast over fp32
weights, gradient checkpointing, ...); kubetune builds its trainer exactly as `kubetune-trainer
train` does (`Recipe.setup` + `Recipe.trainer`). Warm-up steps are not timed. Tokens are the
non-padding tokens of the chosen and rejected sequences. Prints a Markdown table.

    .venv/bin/python bench/train_throughput.py                  # small model, CPU
    .venv/bin/python bench/train_throughput.py --gpu            # Qwen2.5-1.5B shape, 1,024 tokens, MFU

MFU counts the model FLOPs DPO+LoRA needs per token: the policy forward, the policy backward to the
activations (LoRA needs no gradient of the frozen weights) and the reference forward, i.e. 3 x
(2 x matmul parameters + 4 x layers x sequence x hidden) per token, with the LM head counted only on
completion tokens (TRL's fused head projects nothing else); divided by the GPU's dense bf16 peak.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DATA = ROOT / "tests" / "fixtures" / "data"

# Dense bf16 peak per GPU, from the vendors' data sheets (SXM parts).
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0, "L4": 121.0}


@dataclass(frozen=True)
class Shape:
    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    seq_len: int
    batch_size: int


CPU_SHAPE = Shape("small Qwen2 (CPU)", 4, 256, 8, 2, 704, 4096, 256, 4)
# Qwen2.5-1.5B's config: 28 layers, hidden 1536, 12 heads / 2 KV heads, MLP 8960, vocab 151936.
GPU_SHAPE = Shape("Qwen2.5-1.5B shape", 28, 1536, 12, 2, 8960, 151936, 1024, 4)


def matmul_params(shape: Shape) -> tuple[int, int]:
    """Parameters in the decoder's matmuls, and in the LM head."""
    head_dim = shape.hidden // shape.heads
    kv = shape.kv_heads * head_dim
    attention = 2 * shape.hidden * shape.hidden + 2 * shape.hidden * kv
    mlp = 3 * shape.hidden * shape.intermediate
    return shape.layers * (attention + mlp), shape.hidden * shape.vocab


def prompt_tokens(shape: Shape) -> int:
    return shape.seq_len // 2


def answer_tokens(shape: Shape) -> int:
    # Prompt + answer + the chat template's tokens pass seq_len a little: max_length trims every
    # sequence to seq_len, so the benchmark runs at exactly seq_len (1,024 on the GPU).
    return shape.seq_len // 2


def write_inputs(workdir: Path, shape: Shape, pairs: int) -> None:
    """The random-weight model (tokenizer trained on the sample data) and a prepared dataset."""
    from kubetune_trainer.models.tiny import build_model, build_tokenizer, corpus_from_files

    texts = corpus_from_files(sorted(SAMPLE_DATA.rglob("*.json*")))
    tokenizer = build_tokenizer(texts)
    model = build_model(
        vocab_size=max(shape.vocab, len(tokenizer)),
        layers=shape.layers,
        hidden=shape.hidden,
        heads=shape.heads,
        kv_heads=shape.kv_heads,
        intermediate=shape.intermediate,
        max_positions=max(2048, 2 * shape.seq_len),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(workdir / "model")
    tokenizer.save_pretrained(workdir / "model")

    # Prompt and each answer about half of seq_len, whatever the tokenizer's merges.
    def text_of(tokens: int, offset: int) -> str:
        out, index = "", offset
        while len(tokenizer(out, add_special_tokens=False)["input_ids"]) < tokens:
            out += texts[index % len(texts)] + " "
            index += 1
        return out

    rows = []
    for n in range(pairs):
        rows.append(
            {
                "prompt": [{"role": "user", "content": text_of(prompt_tokens(shape), n)}],
                "chosen": [{"role": "assistant", "content": text_of(answer_tokens(shape), 3 * n + 1)}],
                "rejected": [{"role": "assistant", "content": text_of(answer_tokens(shape), 5 * n + 2)}],
            }
        )
    dataset = workdir / "dataset"
    dataset.mkdir()
    (dataset / "train.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    (dataset / "manifest.json").write_text(json.dumps({"fingerprint": "sha256:bench"}))


def meter_callback(warmup: int):
    import torch
    from transformers import TrainerCallback

    class Meter(TrainerCallback):
        """Tokens and seconds between the end of the warm-up and the last step."""

        def __init__(self):
            self.marks: list[tuple[float, int]] = []

        def on_step_end(self, args, state, control, **kwargs):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            if state.global_step >= warmup:
                self.marks.append((time.perf_counter(), state.num_input_tokens_seen))

        def result(self) -> tuple[float, int]:
            (start, tokens_start), (end, tokens_end) = self.marks[0], self.marks[-1]
            return end - start, tokens_end - tokens_start

    return Meter()


def run_kubetune(workdir: Path, shape: Shape, steps: int, meter, precision: str = "auto") -> None:
    from kubetune_trainer.recipes import recipe_for
    from kubetune_trainer.recipes.config import config_from_dict
    from kubetune_trainer.recipes.distributed import resolve_precision

    config = config_from_dict(
        {
            "method": "dpo",
            "base_model": str(workdir / "model"),
            "dataset": str(workdir / "dataset"),
            "output": str(workdir / "kubetune-output"),
            "per_device_train_batch_size": shape.batch_size,
            "cutoff_len": shape.seq_len,
            "max_steps": steps,
            "save_steps": steps + 1,
            "logging_steps": steps,
            "precision": precision,
        }
    )
    precision = resolve_precision(config.precision)
    recipe = recipe_for(config)
    recipe.trainer(recipe.setup(precision), precision, [meter]).train()


def run_trl_defaults(workdir: Path, shape: Shape, steps: int, meter) -> None:
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    pairs = load_dataset("json", data_files=str(workdir / "dataset" / "train.jsonl"), split="train")
    args = DPOConfig(
        output_dir=str(workdir / "trl-output"),
        per_device_train_batch_size=shape.batch_size,
        max_length=shape.seq_len,
        max_steps=steps,
        save_strategy="no",
        report_to=[],
        # Counting only: the same token count the kubetune side reports.
        include_num_input_tokens_seen="non_padding",
        # TRL's default bf16 refuses to start on a CPU-only machine unless told it is one.
        use_cpu=not torch.cuda.is_available(),
    )
    # The adapter kubetune's defaults describe (r 16, alpha 32, dropout 0.05, every linear layer).
    lora = LoraConfig(
        r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM"
    )
    DPOTrainer(
        model=str(workdir / "model"), args=args, train_dataset=pairs, peft_config=lora, callbacks=[meter]
    ).train()


# On a CPU, kubetune's `precision: auto` is fp32 while TRL defaults to bf16 autocast; the third
# side shows the recipe with the same precision.
SIDES = {"trl-defaults": {}, "kubetune": {}, "kubetune-bf16": {"precision": "bf16"}}


def run_worker(side: str, workdir: Path, shape: Shape, args: argparse.Namespace) -> dict:
    command = [
        sys.executable,
        __file__,
        "--worker",
        side,
        "--workdir",
        str(workdir),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--batch-size",
        str(shape.batch_size),
    ]
    if args.gpu:
        command.append("--gpu")
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"{side} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def worker(side: str, workdir: Path, shape: Shape, steps: int, warmup: int) -> dict:
    import torch

    os.environ.setdefault("KUBETUNE_CACHE_DIR", str(workdir / f"cache-{side}"))
    meter = meter_callback(warmup)
    if side == "trl-defaults":
        run_trl_defaults(workdir, shape, steps, meter)
    else:
        run_kubetune(workdir, shape, steps, meter, **SIDES[side])
    seconds, tokens = meter.result()
    result = {"side": side, "seconds": seconds, "tokens": tokens, "tokens_per_second": tokens / seconds}
    result["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if torch.cuda.is_available():
        result["peak_gpu_bytes"] = torch.cuda.max_memory_allocated()
    return result


def peak_flops(override: float | None) -> tuple[float | None, str]:
    import torch

    if not torch.cuda.is_available():
        return None, platform.processor() or platform.machine()
    name = torch.cuda.get_device_name()
    if override:
        return override * 1e12, name
    for key, tflops in PEAK_BF16_TFLOPS.items():
        if key in name:
            return tflops * 1e12, name
    return None, name


def mfu(result: dict, shape: Shape, peak: float | None) -> float | None:
    if peak is None:
        return None
    body, head = matmul_params(shape)
    # Each sequence is a prompt and one answer trimmed to seq_len (write_inputs), about half answer.
    sequence = shape.seq_len
    forward = 2 * body + 4 * shape.layers * sequence * shape.hidden
    completion_share = answer_tokens(shape) / (prompt_tokens(shape) + answer_tokens(shape))
    per_token = 3 * (forward + completion_share * 2 * head)
    return result["tokens_per_second"] * per_token / peak


def versions() -> str:
    from importlib import metadata

    names = ("torch", "transformers", "trl", "peft", "accelerate", "deepspeed")
    return ", ".join(f"{n} {metadata.version(n)}" for n in names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true", help="Qwen2.5-1.5B shape at 1,024 tokens on the GPU")
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per side (default 8)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed first steps (default 2)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating runs per side; the best counts (default 3)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=None, help="per-device batch (default: the shape's)"
    )
    parser.add_argument(
        "--peak-tflops", type=float, default=None, help="GPU dense bf16 peak, if not in the table"
    )
    parser.add_argument("--worker", choices=list(SIDES), help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    shape = GPU_SHAPE if args.gpu else CPU_SHAPE
    if args.batch_size:
        shape = Shape(**(asdict(shape) | {"batch_size": args.batch_size}))
    if args.worker:
        print(json.dumps(worker(args.worker, args.workdir, shape, args.steps, args.warmup)))
        return
    if args.gpu:
        import torch

        if not torch.cuda.is_available():
            sys.exit("--gpu: no CUDA GPU here")

    with tempfile.TemporaryDirectory(prefix="kubetune-bench-") as tmp:
        workdir = Path(tmp)
        write_inputs(workdir, shape, pairs=shape.batch_size * args.steps)
        # On a GPU `precision: auto` is already bf16.
        sides = [side for side in SIDES if not (args.gpu and side == "kubetune-bf16")]
        runs: dict[str, list[dict]] = {side: [] for side in sides}
        # Alternating rounds, best of each: a busy neighbour slows a round, never speeds one up.
        for _ in range(args.rounds):
            for side in sides:
                runs[side].append(run_worker(side, workdir, shape, args))
    results = [max(runs[side], key=lambda r: r["tokens_per_second"]) | {"all": runs[side]} for side in sides]

    peak, device = peak_flops(args.peak_tflops)
    baseline = results[0]["tokens_per_second"]
    print(
        f"DPO+LoRA, {shape.name}, sequences of {shape.seq_len} tokens (prompt + answer, trimmed to "
        f"max_length), batch {shape.batch_size}, {args.steps - args.warmup} timed "
        f"steps, best of {args.rounds} alternating rounds; device: {device}; {versions()}\n"
    )
    print("| recipe | tokens/s (best) | all rounds | vs TRL defaults | peak RSS | peak GPU memory | MFU |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for result in results:
        rounds = ", ".join(f"{r['tokens_per_second']:,.0f}" for r in result["all"])
        gpu = f"{result['peak_gpu_bytes'] / 2**30:.2f} GiB" if "peak_gpu_bytes" in result else "—"
        share = mfu(result, shape, peak)
        print(
            f"| {result['side']} | {result['tokens_per_second']:,.0f} | {rounds} "
            f"| {result['tokens_per_second'] / baseline:.2f}x | {result['peak_rss_bytes'] / 2**30:.2f} GiB | {gpu} "
            f"| {f'{share:.1%}' if share is not None else '—'} |"
        )


if __name__ == "__main__":
    main()
