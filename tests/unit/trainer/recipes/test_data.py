import json

import pytest
from transformers import AutoTokenizer

from kubetune_trainer import storage
from kubetune_trainer.errors import DataError, FingerprintMismatch
from kubetune_trainer.recipes.config import config_from_dict
from kubetune_trainer.recipes.data import SFTTokenizer, TokenizeStats, load_prepared
from kubetune_trainer.recipes.trainers import WeightedCollator

from .conftest import FINGERPRINT, write_prepared

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


def test_prepared_dataset_loads_and_checks_its_fingerprint(sft_dataset):
    dataset = load_prepared(sft_config(sft_dataset, dataset_fingerprint=FINGERPRINT))
    assert (len(dataset.train), len(dataset.test), dataset.fingerprint) == (12, 4, FINGERPRINT)
    assert dataset.train[0]["source"] == "sft_chat.jsonl:5"
    with pytest.raises(
        FingerprintMismatch, match=r"dataset_fingerprint: expected sha256:other, but .*manifest.json has"
    ):
        load_prepared(sft_config(sft_dataset, dataset_fingerprint="sha256:other"))


def test_a_directory_without_manifest_is_not_a_prepared_dataset(tmp_path):
    (tmp_path / "train.jsonl").write_text("{}\n")
    with pytest.raises(DataError) as raised:
        load_prepared(sft_config(tmp_path))
    # The path once, not twice.
    assert raised.value.message == (
        f"dataset: file://{tmp_path}/manifest.json: No such file or directory (is this a prepared dataset?)"
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", r"train.jsonl:3: not JSON"),
        (
            json.dumps({"messages": [{"role": "user", "content": "hi"}]}),
            r"train.jsonl:3: messages: has no assistant",
        ),
        (
            json.dumps({"messages": [{"role": "bot", "content": "hi"}]}),
            r"train.jsonl:3: messages\[0\].role: must be one of",
        ),
        (
            json.dumps({"messages": [{"role": "assistant", "content": 3}]}),
            r"train.jsonl:3: messages\[0\].content: must be",
        ),
        (json.dumps(["a list"]), r"train.jsonl:3: must be a JSON object"),
    ],
)
def test_bad_sft_rows_name_file_and_line(tmp_path, sft_rows, line, message):
    directory = write_prepared(tmp_path / "ds", sft_rows[:3], test_rows=1)
    with open(directory / "train.jsonl", "a", encoding="utf-8") as handle:
        handle.write(line + "\n")
    with pytest.raises(DataError, match=message):
        load_prepared(sft_config(directory))


def test_bad_preference_rows_name_file_and_line(tmp_path, preference_rows):
    broken = dict(preference_rows[0], rejected=[{"role": "user", "content": "not an answer"}])
    directory = write_prepared(tmp_path / "ds", [preference_rows[1], broken], test_rows=0)
    config = config_from_dict(
        {"method": "dpo", "base_model": "/m", "dataset": str(directory), "output": "/o"}
    )
    with pytest.raises(DataError, match=r"train.jsonl:2: rejected: must end with an assistant message"):
        load_prepared(config)


def test_prepared_dataset_loads_from_s3(sft_dataset, s3_bucket):
    uri = f"s3://{s3_bucket}/ns/preferencedatasets/defects"
    storage.upload_dir(sft_dataset, uri)
    dataset = load_prepared(sft_config(uri))
    local = load_prepared(sft_config(sft_dataset))
    assert dataset.train == local.train and dataset.test == local.test
