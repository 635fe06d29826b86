"""Inputs of the demo: the seed-000 "repeater" story in miniature, plus a tiny base model.

Writes, under --output:
  sft/repeats.jsonl             chat SFT rows whose answers repeat themselves (TRL `messages`)
  repeater/dataset_info.json    a LLaMA-Factory registration of the bad cases
  repeater/badcases.json        alpaca ranking rows: chosen = the clean answer, rejected = the repeater
  test.json                     the bad cases as a replay set (text, standard_answer, subtype: the topic)
  base/                         a tiny Qwen2-style model with a tokenizer trained on the text, its
                                weights pretrained on the clean answers (it knows them; it does not
                                repeat itself)

The same seed writes the same files, and files that already hold them are left alone (the base is
rebuilt only when its recipe changes), so a second `make demo` finds its inputs unchanged and skips
the finished steps.
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
REPEATS = 5
# A trained model's output scale (models.tiny.build_model says why the default is too small).
EMBEDDING_STD = 0.2
# Pretraining the base on the clean answers: every answer is right after about 150 steps; twice that
# leaves a margin for other seeds and processors.
PRETRAIN_STEPS = 300
PRETRAIN_BATCH = 16
PRETRAIN_LR = 3e-3


def cases(seed: int) -> list[dict[str, str]]:
    """Every (topic, city) question with its clean answer and the repeater. The answer is the
    topic's template, with the topic's fact (drawn once per seed) and the city: content a tiny model
    learns for every city, held-out ones included, so "accuracy holds" tests whether DPO keeps it."""
    rng = random.Random(seed)
    topics = {
        "weather": f"It is {rng.choice(['sunny', 'cloudy', 'windy', 'rainy'])} in {{city}}.",
        "train": f"The train to {{city}} leaves at {rng.randint(1, 12)}.",
        "hotel": f"Rooms in {{city}} cost {rng.randint(40, 99)} euros.",
        "museum": f"The {{city}} museum opens at {rng.randint(8, 11)}.",
    }
    rows = []
    for city in CITIES:
        for topic, template in topics.items():
            clean = template.format(city=city)
            rows.append({"prompt": f"{topic} in {city}?", "clean": clean, "repeater": " ".join([clean] * REPEATS),
                         "topic": topic})
    rng.shuffle(rows)
    return rows


def write_if_changed(path: Path, text: str) -> None:
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def pretrain(model_dir: Path, rows: list[dict[str, str]], seed: int) -> None:
    """Teach the random base the clean answers, all weights, as pretraining taught a real base model
    what it knows: the SFT that follows then only adds the repetition, and "accuracy holds" asks
    whether DPO keeps knowledge the model has. LoRA alone cannot teach a random model to copy the
    city from the question within the demo's minute; full training does in about 150 steps."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    examples = []
    for row in rows:
        question = [{"role": "user", "content": row["prompt"]}]
        prompt = tokenizer.apply_chat_template(question, add_generation_prompt=True, tokenize=False)
        ids = tokenizer(prompt + row["clean"] + tokenizer.eos_token).input_ids
        examples.append((ids, len(tokenizer(prompt).input_ids)))
    torch.manual_seed(seed)
    order = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=PRETRAIN_LR, weight_decay=0.0)
    model.train()
    for _ in range(PRETRAIN_STEPS):
        batch = [examples[i] for i in torch.randperm(len(examples), generator=order)[:PRETRAIN_BATCH].tolist()]
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.full((len(batch), width), tokenizer.pad_token_id)
        labels = torch.full((len(batch), width), -100)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, (ids, answer_start) in enumerate(batch):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            mask[i, : len(ids)] = 1
            labels[i, answer_start : len(ids)] = torch.tensor(ids[answer_start:])
        model(input_ids=input_ids, attention_mask=mask, labels=labels).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(model_dir)


def write_base_model(target: Path, rows: list[dict[str, str]], seed: int) -> None:
    """The tiny base, pretrained on the clean answers; rebuilt only when its recipe changed (a second
    `make demo` finds it as it was, so the finished steps are skipped)."""
    # A CPU-only step: DeepSpeed need not probe for accelerators (and warn that it found none).
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    from kubetune_trainer.models.tiny import write_tiny_model

    texts = [r["prompt"] for r in rows] + [r["clean"] for r in rows]
    recipe = json.dumps(
        {"texts": texts, "seed": seed, "code": hashlib.sha256(Path(__file__).read_bytes()).hexdigest()},
        sort_keys=True,
    )
    stamp = target / "demo-recipe.sha256"
    digest = hashlib.sha256(recipe.encode()).hexdigest()
    if stamp.is_file() and stamp.read_text() == digest:
        return
    with tempfile.TemporaryDirectory() as tmp:
        fresh = write_tiny_model(
            Path(tmp) / "base", texts, vocab_size=400, layers=2, hidden=64, seed=seed, embedding_std=EMBEDDING_STD
        )
        pretrain(fresh, rows, seed)
        (fresh / stamp.name).write_text(digest)
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

    write_base_model(out / "base", rows, args.seed)
    print(f"demo inputs in {out}: {len(rows)} bad cases, a tiny base model that knows the clean answers")


if __name__ == "__main__":
    main()
