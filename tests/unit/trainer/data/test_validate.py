"""The checks every canonical row passes."""

from __future__ import annotations

import pytest

from kubetune_trainer.data.validate import RowError, check_preference, check_sft, messages


def m(role: str, content: str = "x") -> dict:
    return {"role": role, "content": content}


@pytest.mark.parametrize(
    "roles",
    [["user", "assistant"], ["system", "user", "assistant"], ["user", "assistant", "user", "assistant"]],
)
def test_good_conversations(roles):
    check_sft([m(r) for r in roles])


@pytest.mark.parametrize(
    ("roles", "message"),
    [
        (["assistant"], "message 0 is assistant, expected user"),
        (["user", "user", "assistant"], "message 1 is user, expected assistant"),
        (["user", "system", "assistant"], "message 1 is system, expected assistant"),
        (["user"], "the last message must be from the assistant"),
        (["system"], "the last message must be from the assistant"),
    ],
)
def test_role_order(roles, message):
    with pytest.raises(RowError, match=message) as caught:
        check_sft([m(r) for r in roles])
    assert caught.value.reason == "wrong_role_order"


def test_preference_prompt_ends_with_the_user_and_answers_differ():
    check_preference([m("user")], [m("assistant", "a")], [m("assistant", "b")])
    with pytest.raises(RowError, match="prompt: the last message must be from the user"):
        check_preference([m("user"), m("assistant")], [m("assistant", "a")], [m("assistant", "b")])
    with pytest.raises(RowError) as caught:
        check_preference([m("user")], [m("assistant", "a")], [m("assistant", "a")])
    assert caught.value.reason == "chosen_equals_rejected"


@pytest.mark.parametrize(
    ("value", "reason", "detail"),
    [
        (None, "missing_field", "prompt is missing"),
        ({"role": "user"}, "wrong_type", "prompt is an object, not a list"),
        ([], "empty_content", "prompt is an empty list"),
        (["hi"], "wrong_type", "prompt[0] is a string, not a message object"),
        ([{"role": "user", "content": ""}], "empty_content", "prompt[0].content is empty"),
        ([{"role": "user", "content": 3}], "non_string_content", "prompt[0].content is a number, not a string"),
        ([{"role": "user", "content": ["a"]}], "wrong_type", "prompt[0].content[0] is a string, not a content part"),
        ([{"role": "robot", "content": "x"}], "unknown_role", "prompt[0].role is 'robot'"),
        ([{"role": "user", "content": "x", "weight": 1}], "unsupported_field", "besides role and content: weight"),
        ("plain text", "wrong_type", "prompt is a string, not a list"),
        ([{"role": "user", "content": "q", "tool_calls": [{"name": "f", "arguments": {}}]}], "unsupported_field",
         "only assistant messages call tools"),
        ([{"role": "assistant", "tool_calls": [{"name": "f", "arguments": "{oops"}]}], "wrong_type",
         "prompt[0].tool_calls[0].arguments is not valid JSON"),
        ([{"role": "assistant", "tool_calls": [{"arguments": {}}]}], "missing_field",
         "prompt[0].tool_calls[0].name is missing"),
        ([{"role": "assistant", "content": ""}], "empty_content", "prompt[0].content is empty"),
        ([{"role": "user", "content": "q", "name": "bob"}], "unsupported_field", "besides role and content: name"),
        ([{"role": "assistant", "content": "a", "loss_weight": -1}], "wrong_type", "loss_weight is -1, not a number"),
    ],
)
def test_message_list_errors(value, reason, detail):
    with pytest.raises(RowError) as caught:
        messages(value, "prompt")
    assert caught.value.reason == reason
    assert detail in caught.value.detail


def test_messages_are_rebuilt_in_canonical_key_order_without_null_fields():
    read = messages([{"content": "x", "role": "user", "name": None}], "prompt")
    assert read == [{"role": "user", "content": "x"}]
    assert list(read[0]) == ["role", "content"]
