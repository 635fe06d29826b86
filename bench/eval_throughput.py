"""Benchmark: generation throughput of the eval engines, HF transformers (batched) and vLLM.

Both engines get the same prompts (the sample test sets, rendered once by the model's chat
template) and the same greedy decoding options, through the same `Engine` interface the eval
command uses. Engine start-up and one warm-up batch are not timed. vLLM runs only where it is
installed and a CUDA GPU is present. Prints a Markdown table.

    .venv/bin/python bench/eval_throughput.py                       # tiny random model, CPU
    .venv/bin/python bench/eval_throughput.py --model /models/Qwen2-0.5B-Instruct --prompts 512
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DATA = ROOT / "tests" / "fixtures" / "data"


def shared_prompts() -> list[list[dict[str, str]]]:
    from kubetune_trainer.eval.testset import load_test_set

    sources = [SAMPLE_DATA / "llamafactory" / "test.json", SAMPLE_DATA / "defects" / "sft_chat.jsonl"]
    return [example.prompt for source in sources for example in load_test_set(str(source))]


def tiny_model(directory: Path) -> Path:
    from kubetune_trainer.models.tiny import corpus_from_files, write_tiny_model

    texts = corpus_from_files(sorted(SAMPLE_DATA.rglob("*.json*")))
    return write_tiny_model(directory, texts)


def measure(kind: str, model: str, prompts: list, options) -> dict[str, float]:
    from kubetune_trainer.eval.engines import Request, choose_engine, render_prompt_ids

    engine = choose_engine(kind)[0](model, {}, options)
    try:
        requests = [Request(render_prompt_ids(engine.tokenizer, p, model)) for p in prompts]
        engine.generate(requests[: options.batch_size])
        started = time.perf_counter()
        generations = engine.generate(requests)
        seconds = time.perf_counter() - started
    finally:
        engine.close()
    tokens = sum(g.new_tokens for g in generations)
    return {
        "seconds": seconds,
        "prompts_per_second": len(requests) / seconds,
        "tokens_per_second": tokens / seconds,
        "tokens_per_answer": tokens / len(requests),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="model directory (default: a tiny random model built here)")
    parser.add_argument("--prompts", type=int, default=96, help="prompts per run (the samples', cycled)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-sizes", default="1,8,32", help="HF engine batch sizes to try")
    args = parser.parse_args()

    import torch
    import transformers

    from kubetune_trainer.eval.engines import EngineOptions, vllm_unavailable

    base = shared_prompts()
    prompts = [base[i % len(base)] for i in range(args.prompts)]
    with tempfile.TemporaryDirectory() as scratch:
        model = args.model or str(tiny_model(Path(scratch) / "tiny"))
        rows = []
        for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
            options = EngineOptions(max_new_tokens=args.max_new_tokens, batch_size=batch_size)
            rows.append((f"hf, batch {batch_size}", measure("hf", model, prompts, options)))
        unavailable = vllm_unavailable()
        if unavailable is None:
            options = EngineOptions(max_new_tokens=args.max_new_tokens)
            rows.append(("vllm", measure("vllm", model, prompts, options)))
        else:
            print(f"vLLM not measured: {unavailable}.\n")

    best_hf = max(r["prompts_per_second"] for name, r in rows if name.startswith("hf"))
    device = (
        torch.cuda.get_device_name(0)
        if torch.cuda.is_available()
        else f"CPU ({platform.processor() or platform.machine()})"
    )
    print(
        f"model: {args.model or 'tiny random Qwen2 (2 layers, hidden 64)'}; device: {device}; "
        f"torch {torch.__version__}, transformers {transformers.__version__}; "
        f"{args.prompts} prompts, greedy, max_new_tokens {args.max_new_tokens}\n"
    )
    print("| engine | seconds | prompts/s | tokens/s | tokens/answer | × best HF |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in rows:
        print(
            f"| {name} | {r['seconds']:.2f} | {r['prompts_per_second']:.1f} | {r['tokens_per_second']:.0f} "
            f"| {r['tokens_per_answer']:.1f} | {r['prompts_per_second'] / best_hf:.2f} |"
        )
    print("\n" + json.dumps({name: r for name, r in rows}))


if __name__ == "__main__":
    main()
