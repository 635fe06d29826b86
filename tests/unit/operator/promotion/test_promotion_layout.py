"""The files a promotion writes: one serving group per true base, derived from every record."""

from __future__ import annotations

import json

import yaml

from kubetune_operator.promotion.layout import changes_for, record_path, render_serving, serving_group
from kubetune_operator.promotion.record import PromotionRecord, TrueBase

QWEN = {"baseModel": "s3://models/qwen2-0.5b", "mergedAdapters": []}


def record(name: str, *, base=QWEN, rank: int | None = 16, action: str = "promote") -> PromotionRecord:
    document = {
        "schemaVersion": 1,
        "action": action,
        "adapter": {
            "name": name,
            "uri": f"s3://artifacts/ns/finetunejobs/{name}/final",
            "sha256": {"adapter_model.safetensors": "a" * 64},
            "trueBase": base,
            **({"rank": rank} if rank else {}),
        },
        "evalRun": {
            "namespace": "ns",
            "name": f"{name}-eval",
            "uid": f"uid-{name}",
            "candidate": name,
            "passed": True,
            "gates": [
                {
                    "name": "g",
                    "metric": "m",
                    "threshold": 0.5,
                    "comparator": ">=",
                    "value": 0.6,
                    "passed": True,
                }
            ],
        },
    }
    if action != "promote":
        document["rollback"] = {"replaces": {"namespace": "ns", "name": "older", "uid": "uid-older"}}
    return PromotionRecord.model_validate(document)


def test_the_serving_group_is_readable_stable_and_changes_with_the_chain():
    plain = serving_group(TrueBase.model_validate(QWEN))
    chained = serving_group(
        TrueBase.model_validate(
            {**QWEN, "mergedAdapters": [{"uri": "s3://artifacts/ns/finetunejobs/sft/final"}]}
        )
    )

    assert plain.startswith("qwen2-0-5b-")
    assert plain == serving_group(TrueBase.model_validate(QWEN))
    assert chained != plain
    assert serving_group(TrueBase.model_validate({"baseModel": "hf://Qwen/Qwen2-0.5B-Instruct/"})).startswith(
        "qwen2-0-5b-instruct-"
    )


def test_adapters_on_one_base_share_a_vllm_config_with_enough_lora_slots_and_rank():
    files = render_serving(
        "llm", {"b": record("b", rank=24), "a": record("a", rank=8), "c": record("c", rank=None)}
    )

    group = serving_group(TrueBase.model_validate(QWEN))
    vllm = yaml.safe_load(files[f"llm/serving/{group}/vllm.yaml"])
    assert vllm == {
        "enable-lora": True,
        "max-loras": 3,
        "max-lora-rank": 32,  # the smallest value vLLM accepts that holds rank 24
        "lora-modules": ["a=/adapters/a", "b=/adapters/b", "c=/adapters/c"],
    }
    index = json.loads(files[f"llm/serving/{group}/adapters.json"])
    assert [(entry["name"], entry["path"], entry["evalRunUid"]) for entry in index] == [
        ("a", "/adapters/a", "uid-a"),
        ("b", "/adapters/b", "uid-b"),
        ("c", "/adapters/c", "uid-c"),
    ]
    kustomization = yaml.safe_load(files[f"llm/serving/{group}/kustomization.yaml"])
    assert kustomization["configMapGenerator"] == [
        {"name": f"kubetune-lora-{group}", "files": ["vllm.yaml", "adapters.json", "base.json"]}
    ]
    assert yaml.safe_load(files["llm/kustomization.yaml"])["resources"] == [f"serving/{group}"]


def test_a_withdrawn_adapter_serves_nothing_and_its_empty_group_goes():
    old_group = serving_group(TrueBase.model_validate(QWEN))
    existing = [
        f"llm/serving/{old_group}/{name}" for name in ("kustomization.yaml", "vllm.yaml", "adapters.json")
    ]
    withdrawn = record("a", action="withdraw")

    changes = changes_for("llm", withdrawn, {"a": record("a")}, existing)

    assert all(changes[path] is None for path in existing)
    assert yaml.safe_load(changes["llm/kustomization.yaml"])["resources"] == []
    assert yaml.safe_load(changes[record_path("llm", "a")])["action"] == "withdraw"


def test_the_repository_top_is_a_valid_root():
    files = render_serving("", {"a": record("a")})

    assert "kustomization.yaml" in files
    assert record_path("", "a") == "adapters/a/promotion.yaml"
