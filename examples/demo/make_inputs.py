"""Inputs of the demo: the seed-000 "repeater" story in miniature, plus a tiny base model.

Writes, under --output:
  sft/repeats.jsonl             chat SFT rows whose answers repeat themselves (TRL `messages`)
  repeater/dataset_info.json    a LLaMA-Factory registration of the bad cases
  repeater/badcases.json        alpaca ranking rows: chosen = the clean answer, rejected = the repeater
  test.json                     the bad cases as a replay set (text, standard_answer, subtype: the topic)
  base/                         a random-weight Qwen2-style model with a tokenizer trained on the text

The same seed writes the same bytes, and files that already hold them are left alone, so a second
`make demo` finds its inputs unchanged and skips the finished steps.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import tempfile
from pathlib import Path

CITIES = [
    "Paris", "Berlin", "Tokyo", "Lima", "Oslo", "Cairo", "Delhi", "Rome", "Seoul", "Quito",
    "Dakar", "Hanoi", "Accra", "Sofia", "Riga", "Bern", "Doha", "Kyiv", "Baku", "Male",
]
TOPICS = {
    "weather": lambda city, n: f"Sunny in {city}, high of {n}C.",
    "train": lambda city, n: f"The train to {city} leaves at {n % 12 + 1}.",
    "hotel": lambda city, n: f"Rooms in {city} cost {n} euros.",
    "museum": lambda city, n: f"The {city} museum opens at {n % 12 + 1}.",
}
REPEATS = 5


def cases(seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    for city in CITIES:
        for topic, answer in TOPICS.items():
            clean = answer(city, rng.randint(10, 40))
            rows.append({"prompt": f"{topic} in {city}?", "clean": clean, "repeater": " ".join([clean] * REPEATS),
                         "topic": topic})
    rng.shuffle(rows)
    return rows


def write_if_changed(path: Path, text: str) -> None:
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def write_base_model(target: Path, texts: list[str], seed: int) -> None:
    # A CPU-only step: DeepSpeed need not probe for accelerators (and warn that it found none).
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    from kubetune_trainer.models.tiny import write_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        fresh = write_tiny_model(Path(tmp) / "base", texts, vocab_size=400, layers=2, hidden=64, seed=seed)
        if target.is_dir() and tree_digest(target) == tree_digest(fresh):
            return
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(fresh, target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out: Path = args.output
    rows = cases(args.seed)

    sft = [
        {"messages": [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["repeater"]}]}
        for r in rows
    ]
    write_if_changed(out / "sft" / "repeats.jsonl", "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in sft))

    badcases = [{"instruction": r["prompt"], "chosen": r["clean"], "rejected": r["repeater"]} for r in rows]
    write_if_changed(out / "repeater" / "badcases.json", json.dumps(badcases, ensure_ascii=False, indent=1) + "\n")
    info = {
        "repeater_badcases": {
            "file_name": "badcases.json",
            "ranking": True,
            "columns": {"prompt": "instruction", "chosen": "chosen", "rejected": "rejected"},
        }
    }
    write_if_changed(out / "repeater" / "dataset_info.json", json.dumps(info, indent=1) + "\n")

    # The topic is the replay set's subtype: the report scores every metric per subtype too.
    replay = [{"text": r["prompt"], "standard_answer": r["clean"], "subtype": r["topic"]} for r in rows]
    write_if_changed(out / "test.json", json.dumps(replay, ensure_ascii=False, indent=1) + "\n")

    texts = [r["prompt"] for r in rows] + [r["clean"] for r in rows]
    write_base_model(out / "base", texts, args.seed)
    print(f"demo inputs in {out}: {len(rows)} bad cases, a tiny base model")


if __name__ == "__main__":
    main()
