"""Input formats: how each becomes canonical rows, and how `--format auto` recognises it.

A converter takes one input object and returns `(content, metadata)`: content is
`{"prompt", "chosen", "rejected"}` (preference), `{"messages"[, "tools"]}` (sft) or
`{"prompt", "completion", "label"}` (kto) as message lists, metadata every input field the
conversion did not consume. Anything wrong with the row raises RowError.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubetune_trainer.data import llamafactory, validate
from kubetune_trainer.data.llamafactory import Converter, DatasetAttr
from kubetune_trainer.data.validate import (
    RowError,
    items,
    leftover,
    message,
    messages,
    obj,
    shown,
    text,
    without_weights,
)
from kubetune_trainer.errors import ConfigError

FORMATS = (
    "trl",
    "llamafactory",
    "llamafactory-v1",
    "sharegpt",
    "alpaca",
    "cvalues",
    "chat-sft",
    "defects-raw",
    "replay",
)
# The kinds of rows each format can hold.
KINDS = {
    "trl": ("preference", "sft", "kto"),
    "llamafactory": ("preference", "sft", "kto"),
    "llamafactory-v1": ("preference", "sft"),
    "sharegpt": ("preference", "sft", "kto"),
    "alpaca": ("preference", "sft", "kto"),
    "cvalues": ("preference",),
    "chat-sft": ("sft",),
    "defects-raw": ("sft",),
    "replay": ("sft",),
}

DEFECT_USER = "任务：{task}\n\n事件：\n{event}\n\n输出格式：\n{output_format}"
DEFECT_ASSISTANT = "判断:{judgement}\n\n原因：{reason}"


PREFERENCE_KEYS = ("prompt", "chosen", "rejected")


def _implicit_prompt(
    chosen: Any, rejected: Any, names: tuple[str, str] = ("chosen", "rejected")
) -> tuple[list, list, list]:
    """TRL's implicit-prompt rows: chosen and rejected are whole conversations sharing their start."""
    chosen = messages(chosen, names[0])
    rejected = messages(rejected, names[1])
    if chosen == rejected:
        raise RowError("chosen_equals_rejected", "chosen and rejected are the same conversation")
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    while shared and chosen[shared - 1]["role"] != "user":
        shared -= 1
    if not shared:
        raise RowError("missing_field", "prompt is missing and chosen/rejected share no user turn")
    return chosen[:shared], chosen[shared:], rejected[shared:]


def trl_preference(row: dict) -> tuple[dict, dict]:
    chosen, rejected = row.get("chosen"), row.get("rejected")
    if row.get("prompt") is None and type(chosen) is list and type(rejected) is list:
        prompt, chosen, rejected = _implicit_prompt(chosen, rejected)
    else:
        prompt = messages(row.get("prompt"), "prompt", "user")
        chosen = messages(chosen, "chosen", "assistant")
        rejected = messages(rejected, "rejected", "assistant")
    pair = {"prompt": without_weights(prompt), "chosen": chosen, "rejected": rejected}
    return pair, leftover(row, PREFERENCE_KEYS)


def v1_preference(row: dict) -> tuple[dict, dict]:
    """LLaMA-Factory v1's DPO sample: chosen_messages and rejected_messages are whole conversations, the
    shared start up to its last user turn is the prompt (as TRL's implicit prompt)."""
    prompt, chosen, rejected = _implicit_prompt(
        row.get("chosen_messages"), row.get("rejected_messages"), ("chosen_messages", "rejected_messages")
    )
    _no_tools_column(row)
    pair = {"prompt": without_weights(prompt), "chosen": chosen, "rejected": rejected}
    return pair, leftover(row, ("chosen_messages", "rejected_messages", "tools"))


def _no_tools_column(row: dict) -> None:
    if validate.tools(row.get("tools"), "tools"):
        raise RowError("unsupported_field", "tools: tool calling is read for SFT rows only")


def trl_sft(row: dict) -> tuple[dict, dict]:
    """TRL's conversational or prompt-completion rows, and LLaMA-Factory v1's SFT sample (content parts,
    loss_weight); `tools` (a list or JSON text) are the functions the conversation may call."""
    definitions = validate.tools(row.get("tools"), "tools")
    if row.get("messages") is None and "completion" in row:
        conversation = messages(row.get("prompt"), "prompt", "user") + messages(
            row.get("completion"), "completion", "assistant"
        )
        return validate.sft_row(conversation, definitions), leftover(row, ("prompt", "completion", "tools"))
    conversation = messages(row.get("messages"), "messages")
    return validate.sft_row(conversation, definitions), leftover(row, ("messages", "tools"))


def kto_row(prompt: list[dict], completion: list[dict], value: object, where: str) -> dict:
    return {"prompt": without_weights(prompt), "completion": completion, "label": validate.label(value, where)}


def trl_kto(row: dict) -> tuple[dict, dict]:
    """TRL's unpaired preference rows (prompt, completion, label), or a conversation whose last turn is
    the judged answer with a label beside it (LLaMA-Factory's kto_en_demo layout)."""
    _no_tools_column(row)
    if row.get("prompt") is None and row.get("messages") is not None:
        conversation = messages(row.get("messages"), "messages")
        if len(conversation) < 2 or conversation[-1]["role"] != "assistant":
            raise RowError("wrong_role_order", "messages: the last message must be the judged assistant answer")
        content = kto_row(conversation[:-1], conversation[-1:], row.get("label"), "label")
        return content, leftover(row, ("messages", "label", "tools"))
    prompt = messages(row.get("prompt"), "prompt", "user")
    completion = messages(row.get("completion"), "completion", "assistant")
    return kto_row(prompt, completion, row.get("label"), "label"), leftover(
        row, ("prompt", "completion", "label", "tools")
    )


def cvalues(row: dict) -> tuple[dict, dict]:
    """Seed 002: user turns hold `value`; assistant turns `chosen_value`/`rejected_value`. Earlier
    assistant turns are shared history (their chosen_value); the last one is the compared answer."""
    turns = items(row.get("messages"), "messages")
    prompt = []
    for index, turn in enumerate(turns[:-1]):
        where = f"messages[{index}]"
        turn = obj(turn, where)
        role = turn.get("role")
        if role in ("user", "system"):
            prompt.append(message(role, text(turn.get("value"), f"{where}.value")))
        elif role == "assistant":
            prompt.append(message("assistant", text(turn.get("chosen_value"), f"{where}.chosen_value")))
        else:
            raise RowError(
                "unknown_role", f"{where}.role is {shown(role)}; expected system, user or assistant"
            )
    where = f"messages[{len(turns) - 1}]"
    last = obj(turns[-1], where)
    if last.get("role") != "assistant":
        raise RowError(
            "wrong_role_order", f"{where}: the last message must be the assistant turn being compared"
        )
    if not prompt:
        raise RowError("wrong_role_order", "messages: there is no user turn before the compared answer")
    chosen = [message("assistant", text(last.get("chosen_value"), f"{where}.chosen_value"))]
    rejected = [message("assistant", text(last.get("rejected_value"), f"{where}.rejected_value"))]
    metadata = leftover(row, ("messages",))
    for score in ("chosen_score", "rejected_score"):
        if score in last:
            metadata[score] = last[score]
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}, metadata


def chat_sft(row: dict) -> tuple[dict, dict]:
    return {"messages": messages(row.get("text"), "text")}, leftover(row, ("text",))


def replay(row: dict) -> tuple[dict, dict]:
    """A `test.json` replay item: the user's text and the answer expected back."""
    conversation = [
        message("user", text(row.get("text"), "text")),
        message("assistant", text(row.get("standard_answer"), "standard_answer")),
    ]
    return {"messages": conversation}, leftover(row, ("text", "standard_answer"))


def defects_raw(row: dict) -> tuple[dict, dict]:
    """Seed 001's raw defect record, converted with that workflow's template."""
    instruction = items(row.get("instruction"), "instruction")
    subtype = text(obj(instruction[0], "instruction[0]").get("subtype"), "instruction[0].subtype")
    given = obj(row.get("input"), "input")
    expected = obj(row.get("output"), "output")
    fields = {key: text(given.get(key), f"input.{key}") for key in ("task", "event", "output_format")}
    fields |= {key: text(expected.get(key), f"output.{key}") for key in ("judgement", "reason")}
    conversation = [
        message("user", DEFECT_USER.format(**fields)),
        message("assistant", DEFECT_ASSISTANT.format(**fields)),
    ]
    return {"messages": conversation}, {
        "subtype": subtype,
        **leftover(row, ("instruction", "input", "output")),
    }


@dataclass(frozen=True)
class Detection:
    format: str
    kind: str  # what the rows hold
    evidence: str


def _is_messages(value: Any, *keys: str) -> bool:
    return type(value) is list and bool(value) and type(value[0]) is dict and all(k in value[0] for k in keys)


def _v1(turns: list) -> bool:
    """LLaMA-Factory v1 messages: a loss_weight per message, or content parts holding a `value`."""
    return any(
        type(t) is dict
        and ("loss_weight" in t or any(type(p) is dict and "value" in p for p in t.get("content") or ()))
        for t in turns
    )


def _parts(turns: list) -> str:
    parted = any(type(t) is dict and type(t.get("content")) is list for t in turns)
    return ", content as typed parts" if parted else ""


def detect(row: dict) -> Detection | None:
    """Recognise a format from one input object; None when nothing fits."""
    keys = set(row)
    turns = row.get("messages")
    labelled = type(row.get("label")) is bool
    if type(turns) is list and any(type(t) is dict and "chosen_value" in t for t in turns):
        return Detection(
            "cvalues", "preference", "messages whose assistant turns carry chosen_value/rejected_value"
        )
    if (
        type(row.get("instruction")) is list
        and type(row.get("input")) is dict
        and type(row.get("output")) is dict
    ):
        return Detection(
            "defects-raw", "sft", "instruction[].subtype with input{task,event} and output{judgement}"
        )
    ranked = {"chosen", "rejected"} <= keys
    if "conversations" in keys:
        if ranked:
            return Detection(
                "sharegpt", "preference", "conversations plus chosen/rejected turns (sharegpt ranking)"
            )
        if labelled:
            return Detection("sharegpt", "kto", "conversations with a boolean label (sharegpt KTO)")
        return Detection("sharegpt", "sft", "conversations of from/value turns (sharegpt)")
    if {"chosen_messages", "rejected_messages"} <= keys:
        return Detection(
            "llamafactory-v1", "preference", "chosen_messages/rejected_messages (LLaMA-Factory v1 DPO sample)"
        )
    if "instruction" in keys and ranked:
        return Detection("alpaca", "preference", "instruction with chosen/rejected strings (alpaca ranking)")
    if ranked:
        style = "conversational" if _is_messages(row["chosen"], "role", "content") else "standard"
        prompt = "an explicit prompt" if "prompt" in keys else "an implicit prompt"
        return Detection("trl", "preference", f"prompt/chosen/rejected ({style}, {prompt}: TRL preference)")
    if labelled and {"prompt", "completion"} <= keys:
        return Detection("trl", "kto", "prompt/completion with a boolean label (TRL unpaired preference)")
    if labelled and _is_messages(turns, "role", "content"):
        return Detection(
            "trl", "kto", "messages ending in the judged answer, with a boolean label (LLaMA-Factory KTO layout)"
        )
    if labelled and {"instruction", "output"} <= keys:
        return Detection("alpaca", "kto", "instruction/output with a boolean label (alpaca KTO)")
    if _is_messages(turns, "role", "content") and _v1(turns):
        return Detection(
            "llamafactory-v1", "sft", "messages of typed content parts with loss_weight (LLaMA-Factory v1 SFT sample)"
        )
    if _is_messages(turns, "role", "content"):
        return Detection(
            "trl", "sft", f"messages of role/content turns{_parts(turns)} (TRL conversational language modeling)"
        )
    if {"prompt", "completion"} <= keys:
        return Detection("trl", "sft", "prompt/completion (TRL prompt-completion)")
    if "instruction" in keys and "output" in keys:
        return Detection("alpaca", "sft", "instruction/input/output (alpaca)")
    if "text" in keys and "standard_answer" in keys:
        return Detection("replay", "sft", "text with standard_answer (test.json replay set)")
    if _is_messages(row.get("text"), "role", "content"):
        return Detection("chat-sft", "sft", "text as a role/content message list (chat SFT)")
    return None


def converter(fmt: str, kind: str, attr: DatasetAttr | None = None) -> Converter:
    if kind not in KINDS[fmt]:
        raise ConfigError(f"--format {fmt} holds {' or '.join(KINDS[fmt])} rows, but --kind is {kind}")
    if fmt in ("llamafactory", "alpaca", "sharegpt"):
        attr = attr or llamafactory.defaults(fmt, kind)
        return (
            llamafactory.sharegpt(attr, kind)
            if attr.formatting == "sharegpt"
            else llamafactory.alpaca(attr, kind)
        )
    if fmt in ("trl", "llamafactory-v1"):
        if kind == "preference":
            return v1_preference if fmt == "llamafactory-v1" else trl_preference
        return trl_kto if kind == "kto" else trl_sft
    return {"cvalues": cvalues, "chat-sft": chat_sft, "defects-raw": defects_raw, "replay": replay}[fmt]
