"""An evaluation whose accuracy gate fails, built from scripted answers through the real scoring,
estimation and gate code: the report tests read its page as a person would.

SFT (the baseline) repeats its answers; DPO answers cleanly but drops the key fact on most museum
prompts, so `repetition_falls` passes and `accuracy_holds` fails because of those rows.
"""

from __future__ import annotations

from pathlib import Path

from kubetune_trainer.artifacts.lineage import TrueBase
from kubetune_trainer.eval.candidates import Candidate
from kubetune_trainer.eval.config import parse_config
from kubetune_trainer.eval.engines import Generation
from kubetune_trainer.eval.result import EvalResult
from kubetune_trainer.eval.runner import assess, score_all
from kubetune_trainer.eval.testset import Example

CITIES = ["Paris", "Berlin", "Tokyo", "Lima", "Oslo", "Cairo", "Delhi", "Rome", "Seoul", "Quito", "Dakar", "Hanoi"]
TOPICS = {
    "weather": lambda city, n: f"Sunny in {city}, high of {n}C.",
    "train": lambda city, n: f"The train to {city} leaves at {n % 12 + 1}.",
    "hotel": lambda city, n: f"Rooms in {city} cost {n} euros.",
    "museum": lambda city, n: f"The {city} museum opens at {n % 12 + 1}.",
}
# Museum prompts on which DPO loses the fact (the rows that fail `accuracy_holds`).
MUSEUM_LOSSES = 8


def examples_and_answers() -> tuple[list[Example], dict[str, list[Generation]]]:
    examples, sft, dpo = [], [], []
    for i, (city, (topic, answer)) in enumerate((c, t) for c in CITIES for t in TOPICS.items()):
        clean = answer(city, 10 + (i * 7) % 30)
        metadata = {"subtype": topic}
        examples.append(Example(len(examples), [{"role": "user", "content": f"{topic} in {city}?"}], clean, metadata,
                                f"test.json:{len(examples) + 1}"))
        sft.append(Generation(" ".join([clean] * 4), False, 48))
        lost = topic == "museum" and CITIES.index(city) < MUSEUM_LOSSES
        dpo.append(Generation(f"The {city} museum is worth a visit." if lost else clean, True, 12))
    # Chinese text, a row without the field, and an answer with no break opportunity: the page must
    # show them without spilling out of 1280 pixels.
    for prompt, reference, subtype in (
        ("北京今天天气怎么样？", "今天北京晴，最高气温25度。", "天气"),
        ("What is the longest word?", "Pneumonoultramicroscopicsilicovolcanoconiosis.", None),
    ):
        metadata = {"subtype": subtype} if subtype else {}
        examples.append(Example(len(examples), [{"role": "user", "content": prompt}], reference, metadata,
                                f"test.json:{len(examples) + 1}"))
        sft.append(Generation(reference * 6, False, 48))
        dpo.append(Generation(reference, True, 12))
    sft[-1] = Generation("x" * 400, False, 48)
    return examples, {"sft": sft, "dpo": dpo}


def failing_result(root: Path) -> EvalResult:
    artifacts = f"file://{root}/demo-artifacts"
    config = parse_config({
        "output": f"{artifacts}/default/evalruns/demo-eval",
        "test_set": f"file://{root}/demo-artifacts/inputs/test.json",
        "candidates": [{"name": "sft", "adapter": f"{artifacts}/default/finetunejobs/demo-sft/final", "baseline": True},
                       {"name": "dpo", "adapter": f"{artifacts}/default/finetunejobs/demo-dpo/final"}],
        "metrics": [{"name": "exact_match", "type": "exact_match"}, {"name": "contains", "type": "contains"},
                    {"name": "repetition", "type": "repetition"}, {"name": "length", "type": "length"}],
        "bootstrap_samples": 200,
        "gates": [
            {"name": "repetition_falls", "metric": "repetition", "comparator": "<", "threshold": 0.0,
             "relative_to_baseline": True, "use_confidence_bound": True},
            {"name": "accuracy_holds", "metric": "contains", "comparator": ">=", "threshold": 0.0,
             "relative_to_baseline": True},
            {"name": "few_repeaters", "metric": "repetition.repeater_rate", "candidate": "dpo", "comparator": "<=",
             "threshold": 0.05},
        ],
    })
    examples, answers = examples_and_answers()
    base = TrueBase(f"{artifacts}/inputs/base")
    sft_uri = f"{artifacts}/default/finetunejobs/demo-sft/final"
    resolved = [
        Candidate("sft", True, "adapter", base, sft_uri,
                  lineage={"method": "sft", "baseModel": base.base_model, "mergedAdapters": []}),
        Candidate("dpo", False, "adapter", TrueBase(base.base_model), f"{artifacts}/default/finetunejobs/demo-dpo/final",
                  lineage={"method": "dpo", "baseModel": base.base_model,
                           "mergedAdapters": [{"uri": sft_uri, "sha256": "0" * 64}]}),
    ]
    scores, _, _ = score_all(config, examples, answers, factory=None, cache_dir=root)
    return assess(config, examples, resolved, answers, scores)
