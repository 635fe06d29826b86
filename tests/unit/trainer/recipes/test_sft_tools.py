"""SFT on tool-calling and LLaMA-Factory v1 data: tools reach the chat template, tool calls are trained
and tool results are not, loss_weight 0 masks a turn and other weights scale it; a glaive_toolcall-style
sample goes from data prepare to a trained adapter."""

import json

import pytest
from transformers import AutoTokenizer

from kubetune_trainer.cli import main
from kubetune_trainer.recipes import train
from kubetune_trainer.recipes.config import config_from_dict
from kubetune_trainer.recipes.sft import SFTTokenizer

from .conftest import losses, read_jsonl

TOOLS = [{"type": "function", "function": {"name": "查询快递", "parameters": {"type": "object"}}}]
CALL = {"type": "function", "function": {"name": "查询快递", "arguments": {"运单号": "SF1"}}}
CONVERSATION = [
    {"role": "user", "content": "快递 SF1 到哪了？"},
    {"role": "assistant", "content": "", "tool_calls": [CALL]},
    {"role": "tool", "content": '{"位置": "上海"}'},
    {"role": "assistant", "content": "在上海。"},
]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def sft_config(**overrides):
    return config_from_dict({"method": "sft", "base_model": "/m", "dataset": "/d", "output": "/o"} | overrides)


def trained_text(tokenizer, row) -> str:
    return tokenizer.decode([t for t, label in zip(row["input_ids"], row["labels"], strict=True) if label != -100])


def test_tools_reach_the_template_and_only_calls_and_answers_are_trained(tokenizer):
    row, _ = SFTTokenizer(tokenizer, sft_config()).encode(CONVERSATION, TOOLS)
    assert "# Tools" in tokenizer.decode(row["input_ids"]) and '"name": "查询快递"' in tokenizer.decode(row["input_ids"])
    assert trained_text(tokenizer, row) == (
        '<tool_call>{"name": "查询快递", "arguments": {"运单号": "SF1"}}</tool_call><|im_end|>在上海。<|im_end|>'
    )


def test_loss_weight_zero_masks_a_turn_and_two_doubles_it(tokenizer):
    weighted = [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "错的", "loss_weight": 0.0},
        {"role": "user", "content": "q2"},
        {"role": "assistant", "content": "对的", "loss_weight": 2.0},
    ]
    encoder = SFTTokenizer(tokenizer, sft_config())
    encoder.weighted = True
    row, _ = encoder.encode(weighted)
    assert trained_text(tokenizer, row) == "对的<|im_end|>"
    trained_weights = {w for w, label in zip(row["token_weights"], row["labels"], strict=True) if label != -100}
    assert trained_weights == {2.0}
    # Without completion_only_loss the masked answer stays out as well.
    everything, _ = SFTTokenizer(tokenizer, sft_config(completion_only_loss=False)).encode(weighted)
    assert "错的" not in trained_text(tokenizer, everything) and "q1" in trained_text(tokenizer, everything)


@pytest.mark.parametrize(
    ("source", "args"),
    [
        ("tools/glaive_toolcall.json", []),
        ("llamafactory_v1/sft.jsonl", []),
    ],
    ids=["glaive_toolcall", "llamafactory_v1"],
)
def test_sample_converts_and_trains(sample_data, make_config, trainer_env, tmp_path, monkeypatch, source, args):
    dataset = tmp_path / "dataset"
    monkeypatch.setenv("KUBETUNE_TERMINATION_LOG", str(tmp_path / "prepare-termination"))
    rc = main(["data", "prepare", "--source", str(sample_data / source), "--kind", "sft", "--test-fraction", "0",
               "--output", str(dataset), *args])
    assert rc == 0
    monkeypatch.setenv("KUBETUNE_TERMINATION_LOG", str(trainer_env / "termination-log"))
    summary = train(make_config("sft", dataset=str(dataset), max_steps=6, save_steps=6, learning_rate=1e-2, cutoff_len=1024))
    history = read_jsonl(tmp_path / "output" / "metrics.jsonl")
    train_losses = losses(history)
    assert train_losses[-1] < train_losses[0], train_losses
    assert summary["steps"] == 6
    manifest = json.loads((tmp_path / "output" / "manifest.json").read_text())
    assert manifest["data"]["train"]["dropped"] == {}
