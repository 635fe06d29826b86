"""What every canonical row must satisfy. A failure names its reason and where in the row it is.

Canonical messages are `{"role": "system"|"user"|"assistant", "content": str}`; a conversation
may open with one system message and then alternates user, assistant, user, ...
"""

from __future__ import annotations

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
    "wrong_role_order",
    "chosen_equals_rejected",
    "too_long",
    "duplicate",
)

# Rows dropped by choice (dedupe, --max-length) rather than for being broken: they are counted and
# reported like the others, but neither count toward --max-drop-fraction nor trip --on-bad-rows fail.
FILTERED = frozenset({"too_long", "duplicate"})

ROLES = frozenset({"system", "user", "assistant"})

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


def messages(value: Any, where: str, default_role: str | None = None) -> list[dict]:
    """A role/content message list; with `default_role`, a plain string (TRL's standard format) is one
    message in that role."""
    if default_role and type(value) is str:
        return [message(default_role, text(value, where))]
    result = []
    for index, item in enumerate(items(value, where)):
        if type(item) is not dict:
            raise RowError("wrong_type", f"{where}[{index}] is {type_name(item)}, not a message object")
        role = item.get("role")
        if role not in ROLES:
            raise RowError(
                "unknown_role", f"{where}[{index}].role is {shown(role)}; expected system, user or assistant"
            )
        content = text(item.get("content"), f"{where}[{index}].content")
        if len(item) != 2:
            # Null fields say nothing; Parquet gives them to every message when one message has the field.
            extra = sorted(str(k) for k, v in item.items() if k not in ("role", "content") and v is not None)
            if extra:
                raise RowError(
                    "unsupported_field",
                    f"{where}[{index}] has fields besides role and content: {listed(extra, 'fields')}",
                )
        # Rebuilt so that key order is canonical: dedupe and the split hash the serialized rows.
        result.append(message(role, content))
    return result


def check_turns(
    conversation: list[dict], where: str, first: str = "user", last: str | None = "assistant"
) -> None:
    """An optional leading system message, then turns alternating from `first`, ending with `last`."""
    start = 1 if conversation[0]["role"] == "system" and first == "user" else 0
    other = "assistant" if first == "user" else "user"
    for index in range(start, len(conversation)):
        expected = first if (index - start) % 2 == 0 else other
        role = conversation[index]["role"]
        if role != expected:
            raise RowError(
                "wrong_role_order",
                f"{where}: message {index} is {role}, expected {expected} "
                f"(roles: {listed((m['role'] for m in conversation), 'messages')})",
            )
    if len(conversation) == start or conversation[-1]["role"] != last:
        raise RowError("wrong_role_order", f"{where}: the last message must be from the {last}")


def chars(conversation: list[dict]) -> int:
    return sum([len(m["content"]) for m in conversation])


def check_preference(prompt: list[dict], chosen: list[dict], rejected: list[dict]) -> None:
    """The prompt ends with the user; each answer continues it, from the assistant to the assistant."""
    check_turns(prompt, "prompt", last="user")
    check_turns(chosen, "chosen", first="assistant")
    check_turns(rejected, "rejected", first="assistant")
    if chosen == rejected:
        raise RowError("chosen_equals_rejected", "chosen and rejected are the same answer")


def check_sft(conversation: list[dict]) -> None:
    check_turns(conversation, "messages")
