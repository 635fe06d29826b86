"""Detection with its evidence, and the conversions that are not LLaMA-Factory's."""

from __future__ import annotations

import pytest

from kubetune_trainer.data import formats
from kubetune_trainer.data.validate import RowError
from kubetune_trainer.errors import ConfigError

U = {"role": "user", "content": "q"}
A = {"role": "assistant", "content": "a"}


@pytest.mark.parametrize(
    ("row", "fmt", "kind", "evidence"),
    [
        ({"prompt": [U], "chosen": [A], "rejected": [A]}, "trl", "preference", "conversational, an explicit prompt"),
        ({"prompt": "q", "chosen": "a", "rejected": "b"}, "trl", "preference", "standard"),
        ({"chosen": [U, A], "rejected": [U, A]}, "trl", "preference", "an implicit prompt"),
        ({"messages": [U, A]}, "trl", "sft", "TRL conversational language modeling"),
        ({"prompt": "q", "completion": "a"}, "trl", "sft", "prompt-completion"),
        ({"messages": [{"role": "user", "value": "q"}, {"role": "assistant", "chosen_value": "a"}]}, "cvalues",
         "preference", "chosen_value"),
        ({"conversations": [], "chosen": {}, "rejected": {}}, "sharegpt", "preference", "sharegpt ranking"),
        ({"conversations": []}, "sharegpt", "sft", "from/value"),
        ({"instruction": "i", "input": "", "chosen": "a", "rejected": "b"}, "alpaca", "preference", "alpaca ranking"),
        ({"instruction": "i", "output": "o"}, "alpaca", "sft", "instruction/input/output"),
        ({"instruction": [{"subtype": "x"}], "input": {}, "output": {}}, "defects-raw", "sft", "subtype"),
        ({"text": "q", "standard_answer": "a"}, "replay", "sft", "test.json"),
        ({"subtype": "x", "text": [U, A]}, "chat-sft", "sft", "chat SFT"),
    ],
)
def test_detection_names_format_kind_and_evidence(row, fmt, kind, evidence):
    detection = formats.detect(row)
    assert (detection.format, detection.kind) == (fmt, kind)
    assert evidence in detection.evidence


def test_nothing_known_is_not_detected():
    assert formats.detect({"question": "q", "answer": "a"}) is None


def test_trl_standard_strings_become_messages():
    content, metadata = formats.trl_preference({"prompt": "q", "chosen": "a", "rejected": "b", "id": 1})
    assert content == {
        "prompt": [{"role": "user", "content": "q"}],
        "chosen": [{"role": "assistant", "content": "a"}],
        "rejected": [{"role": "assistant", "content": "b"}],
    }
    assert metadata == {"id": 1}


def test_trl_implicit_prompt_is_the_shared_start_up_to_the_last_user_turn():
    system = {"role": "system", "content": "s"}
    chosen = [system, U, {"role": "assistant", "content": "good"}]
    rejected = [system, U, {"role": "assistant", "content": "bad"}]
    content, _ = formats.trl_preference({"chosen": chosen, "rejected": rejected})
    assert content["prompt"] == [system, U]
    assert content["chosen"] == chosen[2:] and content["rejected"] == rejected[2:]
    with pytest.raises(RowError, match="share no user turn"):
        formats.trl_preference({"chosen": [{"role": "user", "content": "x"}, A], "rejected": [U, A]})
    with pytest.raises(RowError) as caught:
        formats.trl_preference({"chosen": [U, A], "rejected": [U, A]})
    assert caught.value.reason == "chosen_equals_rejected"


def test_trl_prompt_completion_and_messages():
    assert formats.trl_sft({"prompt": [U], "completion": [A]})[0] == {"messages": [U, A]}
    assert formats.trl_sft({"messages": [U, A], "subtype": "x"}) == ({"messages": [U, A]}, {"subtype": "x"})
    with pytest.raises(RowError, match="messages is missing"):
        formats.trl_sft({"text": "x"})


def test_cvalues_rejects_a_conversation_not_ending_on_the_compared_answer():
    with pytest.raises(RowError, match="last message must be the assistant turn") as caught:
        formats.cvalues({"messages": [{"role": "user", "value": "q"}]})
    assert caught.value.reason == "wrong_role_order"
    with pytest.raises(RowError, match=r"messages\[1\]\.rejected_value is missing"):
        formats.cvalues({"messages": [{"role": "user", "value": "q"}, {"role": "assistant", "chosen_value": "a"}]})


def test_defect_records_use_the_workflow_template():
    content, metadata = formats.defects_raw({
        "instruction": [{"subtype": "除零"}],
        "input": {"task": "T", "event": "E", "output_format": "F"},
        "output": {"judgement": "是", "reason": "R"},
        "id": "r1",
    })
    assert content["messages"] == [
        {"role": "user", "content": "任务：T\n\n事件：\nE\n\n输出格式：\nF"},
        {"role": "assistant", "content": "判断:是\n\n原因：R"},
    ]
    assert metadata == {"subtype": "除零", "id": "r1"}
    with pytest.raises(RowError, match=r"input\.event is missing"):
        formats.defects_raw({"instruction": [{"subtype": "x"}], "input": {"task": "T"}, "output": {}})


def test_a_format_refuses_the_other_kind():
    with pytest.raises(ConfigError, match="--format cvalues holds preference rows, but --kind is sft"):
        formats.converter("cvalues", "sft")
