"""What every canonical row must satisfy. A failure names its reason and where in the row it is.

Canonical messages are `{"role": "system"|"user"|"assistant"|"tool", "content": str}`, an assistant
message may add `tool_calls` (OpenAI's `{"type": "function", "function": {"name", "arguments"}}`, its
content then possibly empty) and a `loss_weight` other than 1, a tool message a `name` and a
`tool_call_id`. A conversation may open with one system message and then alternates user and
assistant turns; an assistant turn that calls tools is followed by their results (tool messages)
and then by the assistant again.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from typing import Any

# Every reason a row can be dropped for, in the order docs/data.md explains them.
REASONS = (
    "broken_json",
    "broken_csv",
    "not_an_object",
    "missing_field",
    "wrong_type",
    "non_string_content",
    "empty_content",
    "unknown_role",
    "unsupported_field",
    "unsupported_media",
    "wrong_role_order",
    "chosen_equals_rejected",
    "too_long",
    "duplicate",
)

# Rows dropped by choice (dedupe, --max-length) rather than for being broken: they are counted and
# reported like the others, but neither count toward --max-drop-fraction nor trip --on-bad-rows fail.
FILTERED = frozenset({"too_long", "duplicate"})

ROLES = frozenset({"system", "user", "assistant", "tool"})
# Content parts of a multimodal message, by their `type` in OpenAI's, TRL's and LLaMA-Factory v1's
# spellings: kubetune trains text-only models, so a row holding one cannot be used.
MEDIA_PARTS = {
    "image": "an image",
    "image_url": "an image",
    "input_image": "an image",
    "video": "a video",
    "video_url": "a video",
    "audio": "audio",
    "audio_url": "audio",
    "input_audio": "audio",
    "file": "a file",
}

# How much of a value, and how many names, a message quotes: the error must fit the pod's 4 KiB
# termination message, and a stray answer in a role field must not flood the log.
SHOWN_CHARS = 40
LISTED = 8


class RowError(Exception):
    """One bad row: `reason` is one of REASONS, `detail` says which field and why."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "a number" if isinstance(value, int | float) else type(value).__name__
    )


def _cut(text: str) -> str:
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 1] + "…"


def shown(value: Any) -> str:
    """A value quoted in a message, cut short."""
    return _cut(repr(value))


def listed(names: Iterable[Any], noun: str) -> str:
    """Names for a message: the first few, each cut short, and how many there are when not all fit."""
    names = [str(name) for name in names]
    head = ", ".join(_cut(name) for name in names[:LISTED])
    return head if len(names) <= LISTED else f"{head}, … ({len(names)} {noun})"


def _present(value: Any, where: str, expected: type, reason: str) -> Any:
    if value is None:
        raise RowError("missing_field", f"{where} is missing")
    if type(value) is not expected:
        raise RowError(reason, f"{where} is {type_name(value)}, not {type_name(expected())}")
    return value


def text(value: Any, where: str) -> str:
    """A required, non-blank string."""
    value = _present(value, where, str, "non_string_content")
    if not value or value.isspace():
        raise RowError("empty_content", f"{where} is empty")
    return value


def obj(value: Any, where: str) -> dict:
    return _present(value, where, dict, "wrong_type")


def items(value: Any, where: str) -> list:
    """A required, non-empty list."""
    if not _present(value, where, list, "wrong_type"):
        raise RowError("empty_content", f"{where} is an empty list")
    return value


def leftover(row: dict, consumed: Collection[str]) -> dict:
    """The input fields a conversion did not use; they travel on as metadata."""
    return {key: value for key, value in row.items() if key not in consumed}


def message(role: str, content: str) -> dict:
    return {"role": role, "content": content}


def _json(value: Any, where: str) -> Any:
    """A field that may hold JSON text (LLaMA-Factory stores tools and tool calls so) or the value itself."""
    if type(value) is not str:
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise RowError("wrong_type", f"{where} is not valid JSON ({exc.msg} at column {exc.colno})") from None


def tool_call(value: Any, where: str) -> dict:
    """One call in OpenAI's shape, read from OpenAI/TRL's `{"type", "function": {...}}` or LLaMA-Factory's
    `{"name", "arguments"}`; arguments given as JSON text become an object, as chat templates expect."""
    call = obj(_json(value, where), where)
    function = obj(call.get("function"), f"{where}.function") if "function" in call else call
    at = f"{where}.function" if "function" in call else where
    name = text(function.get("name"), f"{at}.name")
    arguments = obj(_json(function.get("arguments"), f"{at}.arguments"), f"{at}.arguments")
    result: dict = {"type": "function", "function": {"name": name, "arguments": arguments}}
    if call.get("id") is not None:
        result["id"] = text(call.get("id"), f"{where}.id")
    return result


def tool_calls(value: Any, where: str) -> list[dict]:
    """A list of calls; one call alone (LLaMA-Factory's function_call turns often hold one) is a list of one."""
    value = _json(value, where)
    if type(value) is dict:
        return [tool_call(value, where)]
    return [tool_call(call, f"{where}[{index}]") for index, call in enumerate(items(value, where))]


def tools(value: Any, where: str) -> list[dict]:
    """Tool definitions (a list, or its JSON text as LLaMA-Factory stores it), each in OpenAI's
    `{"type": "function", "function": {"name", "description", "parameters"}}` shape that chat templates
    render. Nothing (null, "", []) is no tools."""
    if not value:
        return []
    value = _json(value, where)
    if not value:
        return []
    if type(value) is dict:
        value = [value]
    result = []
    for index, tool in enumerate(items(value, where)):
        at = f"{where}[{index}]"
        tool = obj(tool, at)
        function = obj(tool.get("function"), f"{at}.function") if "function" in tool else tool
        text(function.get("name"), f"{at}.name")
        result.append({"type": "function", "function": function})
    return result


def _parts(value: list, where: str) -> tuple[str, list[dict]]:
    """Typed content parts: text parts joined (LLaMA-Factory v1 spells the text `value`, OpenAI and TRL
    `text`), v1's tool_call parts as calls; images, audio and video are refused."""
    texts, calls = [], []
    for index, part in enumerate(value):
        at = f"{where}[{index}]"
        if type(part) is not dict:
            raise RowError("wrong_type", f"{at} is {type_name(part)}, not a content part object")
        kind = part.get("type")
        if kind == "text":
            key = "text" if "text" in part else "value"
            texts.append(_present(part.get(key), f"{at}.{key}", str, "non_string_content"))
        elif kind == "tool_call":
            calls.append(tool_call(part.get("value"), f"{at}.value"))
        elif kind in MEDIA_PARTS:
            raise RowError(
                "unsupported_media",
                f"{at} is {MEDIA_PARTS[kind]} part ({kind}): images, audio and video are not supported "
                "(kubetune trains text-only models)",
            )
        else:
            raise RowError("unsupported_field", f"{at}.type is {shown(kind)}; expected text")
    return "".join(texts), calls


# Keys a canonical message may carry besides role and content, and the roles they belong to.
EXTRA_KEYS = {"tool_calls": "assistant", "loss_weight": None, "name": "tool", "tool_call_id": "tool"}


def _message(item: dict, at: str) -> dict:
    role = item.get("role")
    if role not in ROLES:
        raise RowError(
            "unknown_role", f"{at}.role is {shown(role)}; expected system, user, assistant or tool"
        )
    calls = []
    content = item.get("content")
    if type(content) is list:
        content, calls = _parts(content, f"{at}.content")
    if item.get("tool_calls") is not None:
        if role != "assistant":
            raise RowError("unsupported_field", f"{at} has tool_calls, but only assistant messages call tools")
        calls += tool_calls(item["tool_calls"], f"{at}.tool_calls")
    if calls and role != "assistant":
        raise RowError("unsupported_field", f"{at} holds a tool call, but only assistant messages call tools")
    if calls and (content is None or (type(content) is str and not content.strip())):
        content = ""
    else:
        content = text(content, f"{at}.content")
    # Null fields say nothing; Parquet gives them to every message when one message has the field.
    extra = sorted(
        str(k) for k, v in item.items() if k not in ("role", "content", *EXTRA_KEYS) and v is not None
    )
    misplaced = [
        k for k, owner in EXTRA_KEYS.items() if owner and owner != role and item.get(k) is not None
    ]
    if extra or misplaced:
        raise RowError(
            "unsupported_field",
            f"{at} has fields besides role and content: {listed(extra + misplaced, 'fields')}",
        )
    # Rebuilt so that key order is canonical: dedupe and the split hash the serialized rows.
    result = message(role, content)
    if calls:
        result["tool_calls"] = calls
    for key in ("name", "tool_call_id"):
        if item.get(key) is not None:
            result[key] = text(item[key], f"{at}.{key}")
    weight = item.get("loss_weight")
    if weight is not None:
        if type(weight) not in (int, float) or not 0 <= weight < float("inf"):
            raise RowError("wrong_type", f"{at}.loss_weight is {shown(weight)}, not a number of 0 or more")
        # Only answers are trained, so only theirs means something (LLaMA-Factory v1 gives the others 0).
        if role == "assistant" and weight != 1:
            result["loss_weight"] = float(weight)
    return result


def messages(value: Any, where: str, default_role: str | None = None) -> list[dict]:
    """A role/content message list; with `default_role`, a plain string (TRL's standard format) is one
    message in that role. Content may be a list of typed parts (OpenAI, TRL, LLaMA-Factory v1)."""
    if default_role and type(value) is str:
        return [message(default_role, text(value, where))]
    result = []
    for index, item in enumerate(items(value, where)):
        if type(item) is not dict:
            raise RowError("wrong_type", f"{where}[{index}] is {type_name(item)}, not a message object")
        result.append(_message(item, f"{where}[{index}]"))
    return result


def sft_row(conversation: list[dict], definitions: list[dict]) -> dict:
    """An SFT row; its tool definitions only when it has some, so rows without stay as they were."""
    return {"messages": conversation, "tools": definitions} if definitions else {"messages": conversation}


def without_weights(conversation: list[dict]) -> list[dict]:
    """A prompt's messages, whose loss weights mean nothing: a prompt is never trained."""
    return [{k: v for k, v in m.items() if k != "loss_weight"} for m in conversation]


def _expected(previous: dict | None, first: str) -> tuple[str, ...]:
    if previous is None:
        return (first,)
    if previous["role"] == "assistant":
        return ("tool",) if previous.get("tool_calls") else ("user",)
    if previous["role"] == "tool":
        return ("tool", "assistant")
    return ("assistant",)


def check_turns(
    conversation: list[dict], where: str, first: str = "user", last: str | None = "assistant"
) -> None:
    """An optional leading system message, then turns alternating from `first`, ending with `last`; an
    assistant turn that calls tools is followed by one tool message or more, then by the assistant."""
    start = 1 if conversation[0]["role"] == "system" and first == "user" else 0
    previous = None
    for index in range(start, len(conversation)):
        expected = _expected(previous, first)
        role = conversation[index]["role"]
        if role not in expected:
            raise RowError(
                "wrong_role_order",
                f"{where}: message {index} is {role}, expected {' or '.join(expected)} "
                f"(roles: {listed((m['role'] for m in conversation), 'messages')})",
            )
        previous = conversation[index]
    if len(conversation) == start or conversation[-1]["role"] != last:
        raise RowError("wrong_role_order", f"{where}: the last message must be from the {last}")


def chars(conversation: list[dict]) -> int:
    return sum([len(m["content"]) for m in conversation])


def _no_tools(conversation: list[dict], where: str) -> None:
    for index, turn in enumerate(conversation):
        if turn["role"] == "tool" or "tool_calls" in turn:
            raise RowError(
                "unsupported_field",
                f"{where}[{index}] is a tool {'result' if turn['role'] == 'tool' else 'call'}: "
                "tool calling is read for SFT rows only",
            )


def _whole_answer(answer: list[dict], where: str) -> None:
    for index, turn in enumerate(answer):
        if "loss_weight" in turn:
            raise RowError(
                "unsupported_field",
                f"{where}[{index}].loss_weight is {turn['loss_weight']:g}: preference objectives weigh "
                "whole answers (only SFT honours loss_weight)",
            )


def check_preference(prompt: list[dict], chosen: list[dict], rejected: list[dict]) -> None:
    """The prompt ends with the user; each answer continues it, from the assistant to the assistant."""
    for where, part in (("prompt", prompt), ("chosen", chosen), ("rejected", rejected)):
        _no_tools(part, where)
    check_turns(prompt, "prompt", last="user")
    check_turns(chosen, "chosen", first="assistant")
    check_turns(rejected, "rejected", first="assistant")
    _whole_answer(chosen, "chosen")
    _whole_answer(rejected, "rejected")
    if chosen == rejected:
        raise RowError("chosen_equals_rejected", "chosen and rejected are the same answer")


def check_kto(prompt: list[dict], completion: list[dict]) -> None:
    """An unpaired answer: the prompt ends with the user, the completion is the assistant's."""
    _no_tools(prompt, "prompt")
    _no_tools(completion, "completion")
    check_turns(prompt, "prompt", last="user")
    check_turns(completion, "completion", first="assistant")
    _whole_answer(completion, "completion")


def label(value: Any, where: str) -> bool:
    """A desirable (true) or undesirable (false) label; CSV gives the words as text."""
    if type(value) is str and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return _present(value, where, bool, "wrong_type")


def check_sft(conversation: list[dict]) -> None:
    check_turns(conversation, "messages")
    answers = [turn for turn in conversation if turn["role"] == "assistant"]
    if all(turn.get("loss_weight") == 0 for turn in answers):
        raise RowError("empty_content", "messages: every assistant turn has loss_weight 0, so nothing is trained")
