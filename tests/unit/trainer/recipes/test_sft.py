"""SFT: tokenisation with the chat template, key-token weights and packing; end to end on the tiny
model, LoRA and full, with its outputs and progress."""

import json

import pytest
from transformers import AutoTokenizer

from kubetune_trainer.errors import DataError
from kubetune_trainer.progress import metrics
from kubetune_trainer.recipes import train
from kubetune_trainer.recipes.config import config_from_dict
from kubetune_trainer.recipes.sft import SFTTokenizer, TokenizeStats, WeightedCollator

from .conftest import losses, read_jsonl

CONVERSATION = [
    {"role": "system", "content": "You judge alarms."},
    {"role": "user", "content": "file_0.c:10 报告 空指针"},
    {"role": "assistant", "content": "判断:否\n\n原因：不可达"},
    {"role": "user", "content": "再看 file_1.c"},
    {"role": "assistant", "content": "判断:是"},
]


# A template in the style of Gemma's and Llama 2's: some conversations it refuses outright.
REFUSES_SYSTEM = (
    "{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def sft_config(dataset="/d", **overrides):
    return config_from_dict(
        {"method": "sft", "base_model": "/m", "dataset": str(dataset), "output": "/o"} | overrides
    )


def test_labels_cover_each_assistant_turn_through_its_end_token(tokenizer):
    row, length = SFTTokenizer(tokenizer, sft_config()).encode(CONVERSATION)
    assert length == len(row["input_ids"])
    trained = [t for t, label in zip(row["input_ids"], row["labels"], strict=True) if label != -100]
    # Both assistant turns, each ending on <|im_end|>; nothing of the system or user turns.
    assert tokenizer.decode(trained) == "判断:否\n\n原因：不可达<|im_end|>判断:是<|im_end|>"


def test_without_completion_only_loss_every_token_is_trained(tokenizer):
    row, _ = SFTTokenizer(tokenizer, sft_config(completion_only_loss=False)).encode(CONVERSATION)
    assert row["labels"] == row["input_ids"]


def test_key_tokens_get_their_weight_and_others_one(tokenizer):
    encoder = SFTTokenizer(tokenizer, sft_config(key_token_patterns=["判断:(是|否)"], key_token_weight=4.0))
    row, _ = encoder.encode(CONVERSATION)
    heavy = [t for t, w in zip(row["input_ids"], row["token_weights"], strict=True) if w == 4.0]
    assert "判断:否" in tokenizer.decode(heavy) and "判断:是" in tokenizer.decode(heavy)
    assert set(row["token_weights"]) == {1.0, 4.0}
    assert "原因" not in tokenizer.decode(heavy)


def test_rows_cut_before_any_assistant_token_are_dropped_and_counted(tokenizer):
    encoder = SFTTokenizer(tokenizer, sft_config(cutoff_len=8))
    stats = TokenizeStats()
    rows = [{"messages": CONVERSATION, "source": "train.jsonl:7"}]
    assert encoder.dataset(rows, stats, packing=False) is None
    assert stats.summary() == {
        "rows": 1,
        "truncated": 1,
        "dropped": {"no_trainable_tokens_within_cutoff_len": 1},
    }
    assert stats.dropped["no_trainable_tokens_within_cutoff_len"] == ["train.jsonl:7"]


def test_a_conversation_the_chat_template_refuses_names_its_row(tiny_model_dir):
    strict = AutoTokenizer.from_pretrained(tiny_model_dir)
    strict.chat_template = REFUSES_SYSTEM
    rows = [{"messages": CONVERSATION[1:3], "source": "s:1"}, {"messages": CONVERSATION, "source": "s:2"}]
    with pytest.raises(
        DataError, match=r"^s:2: the base model's chat template refuses .*System role not supported"
    ):
        SFTTokenizer(strict, sft_config()).dataset(rows, TokenizeStats(), packing=False)


def test_packing_keeps_weights_aligned_and_collates_padding_free(tokenizer):
    weighted = {"key_token_patterns": ["判断"], "key_token_weight": 2.0}
    single, length = SFTTokenizer(tokenizer, sft_config(**weighted)).encode(CONVERSATION)
    encoder = SFTTokenizer(tokenizer, sft_config(cutoff_len=2 * length + 1, **weighted))
    rows = [{"messages": CONVERSATION, "source": f"s:{n}"} for n in range(3)]
    packed = encoder.dataset(rows, TokenizeStats(), packing=True)
    assert sorted(len(row) for row in packed["seq_lengths"]) == [1, 2]
    assert all(
        weights == single["token_weights"] * len(row)
        for weights, row in zip(packed["token_weights"], packed["seq_lengths"], strict=True)
    )
    batch = WeightedCollator(pad_token_id=tokenizer.pad_token_id, padding_free=True)(list(packed))
    assert (
        batch["input_ids"].shape == batch["token_weights"].shape == batch["labels"].shape == (1, 3 * length)
    )
    assert "attention_mask" not in batch
    assert batch["token_weights"].sum().item() == 3 * sum(single["token_weights"])


def test_collator_pads_weights_like_labels(tokenizer):
    encoder = SFTTokenizer(tokenizer, sft_config(key_token_patterns=["判断"], key_token_weight=2.0))
    short, _ = encoder.encode(CONVERSATION[:3])
    long, _ = encoder.encode(CONVERSATION)
    batch = WeightedCollator(pad_token_id=tokenizer.pad_token_id)([short, long])
    assert batch["token_weights"].shape == batch["labels"].shape == (2, len(long["input_ids"]))
    assert batch["token_weights"][0, len(short["input_ids"]) :].eq(0).all()



def test_lora_sft_with_key_tokens_and_packing_learns(make_config, trainer_env, tmp_path, tiny_model_dir):
    config = make_config(
        "sft",
        max_steps=8,
        save_steps=4,
        key_token_patterns=["判断:(是|否)"],
        key_token_weight=3.0,
        packing=True,
    )
    tokens_before = metrics().tokens_total._value.get()
    summary = train(config)
    output = tmp_path / "output"
    history = read_jsonl(output / "metrics.jsonl")
    train_losses = losses(history)
    assert len(train_losses) == 8
    assert sum(train_losses[-3:]) / 3 < sum(train_losses[:3]) / 3 - 0.2, train_losses
    eval_losses = losses(history, "eval_loss")
    assert eval_losses[-1] < eval_losses[0]

    assert summary["steps"] == 8 and summary["artifact"]["type"] == "adapter"
    assert summary["finalLoss"] == train_losses[-1]
    assert summary["bestCheckpoint"].endswith("/checkpoints/checkpoint-000008")
    assert summary["bestEvalLoss"] == eval_losses[-1]
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "kubetune.json"} <= set(
        summary["artifact"]["sha256"]
    )
    lineage = json.loads((output / "final" / "kubetune.json").read_text())
    assert lineage["type"] == "adapter" and lineage["method"] == "sft"
    assert lineage["baseModel"] == f"file://{tiny_model_dir}" and lineage["mergedAdapters"] == []
    assert lineage["datasetFingerprint"] == "sha256:recipes-test"

    manifest = json.loads((output / "manifest.json").read_text())
    assert (
        manifest["files"]["final/adapter_model.safetensors"]
        == summary["artifact"]["sha256"]["adapter_model.safetensors"]
    )
    assert "metrics.jsonl" in manifest["files"]
    assert manifest["config"]["key_token_weight"] == 3.0
    assert manifest["attention"] == "sdpa"  # FlashAttention 2 needs CUDA
    assert {"torch", "transformers", "trl", "peft", "deepspeed"} <= set(manifest["versions"])
    assert set(manifest["timings"]) == {"setup", "data", "train", "save"}
    assert manifest["data"]["train"] == {"rows": 12, "truncated": 0, "dropped": {}}

    events = read_jsonl(trainer_env / "progress.jsonl")
    assert [e["phase"] for e in events][:3] == ["setup", "data", "train"] and events[-1]["phase"] == "done"
    steps = [e for e in events if e.get("loss") is not None]
    assert steps[-1]["step"] == 8 and steps[-1]["total_steps"] == 8 and steps[-1]["percent"] == 100.0
    assert all(e["tokens_per_second"] > 0 for e in steps[1:]) and "eta_seconds" in steps[0]
    # Throughput for Prometheus is a counter of the tokens trained on (its rate() is tokens/s).
    assert metrics().tokens_total._value.get() > tokens_before
    assert any(e.get("checkpoint", "").endswith("checkpoint-000004") for e in events)


def test_full_sft_writes_a_full_model(make_config, trainer_env, tmp_path):
    summary = train(
        make_config("sft", peft="full", learning_rate=1e-3, max_steps=4, save_steps=2, save_total_limit=1)
    )
    output = tmp_path / "output"
    assert summary["artifact"]["type"] == "full"
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= set(summary["artifact"]["sha256"])
    assert json.loads((output / "final" / "kubetune.json").read_text())["type"] == "full"
    train_losses = losses(read_jsonl(output / "metrics.jsonl"))
    assert train_losses[-1] < train_losses[0]
    # save_total_limit 1 keeps the newest and the best, here the same checkpoint.
    assert sorted(p.name for p in (output / "checkpoints").iterdir()) == ["checkpoint-000004"]

    # A new run into the same output withdraws the old manifest before it rewrites anything.
    assert (output / "manifest.json").is_file()
    with pytest.raises(DataError, match=r"no row keeps an assistant token within cutoff_len \(8\)"):
        train(make_config("sft", peft="full", cutoff_len=8))
    assert not (output / "manifest.json").exists()


def test_a_run_shorter_than_logging_steps_still_reports_its_final_loss(make_config, trainer_env, tmp_path):
    summary = train(make_config("sft", max_steps=3, save_steps=3, logging_steps=10))
    train_losses = losses(read_jsonl(tmp_path / "output" / "metrics.jsonl"))
    assert len(train_losses) == 1
    assert summary["finalLoss"] == train_losses[-1]
