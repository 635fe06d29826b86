"""Test sets an EvalRun replays: prepared datasets, canonical JSONL and LLaMA-Factory `test.json`.

Every row becomes an `Example`: the prompt as chat messages, the reference answer and the
row's metadata (subtype, ...). Accepted row shapes, in any .json array or .jsonl file:

* preference (canonical): `prompt` + `chosen` (+ `rejected`): reference = chosen's last assistant turn;
* sft (canonical): `messages`: the prompt is every turn before the last assistant turn, which is the reference;
* replay (LLaMA-Factory): `text` + `standard_answer`; `text` may also be a message list
  (the seed-001 `sft_chat.jsonl` shape), whose last assistant turn is then the reference.

A broken row is a DataError naming file:line; nothing is skipped silently.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from kubetune_trainer import storage, strict_json
from kubetune_trainer.errors import DataError

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Example:
    index: int
    prompt: list[dict[str, str]]
    reference: str
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str = ""


def _messages(value: Any, where: str, what: str) -> list[dict[str, str]]:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: `{what}` must be a non-empty list of messages")
    messages = []
    for i, message in enumerate(value):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise DataError(f"{where}: `{what}[{i}]` must be an object with `role` and `content`")
        if message["role"] not in ROLES:
            raise DataError(
                f"{where}: `{what}[{i}].role` is {message['role']!r}; expected one of {', '.join(ROLES)}"
            )
        if not isinstance(message["content"], str):
            raise DataError(f"{where}: `{what}[{i}].content` must be text")
        messages.append({"role": message["role"], "content": message["content"]})
    return messages


def _split_last_answer(messages: list[dict[str, str]], where: str, what: str) -> tuple[list, str]:
    if messages[-1]["role"] != "assistant":
        raise DataError(
            f"{where}: the last message of `{what}` must be the assistant's answer (the reference)"
        )
    if len(messages) < 2:
        raise DataError(f"{where}: `{what}` holds only the answer; there is no prompt before it")
    return messages[:-1], messages[-1]["content"]


def row_to_example(row: Any, index: int, where: str) -> Example:
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if "messages" in row:
        prompt, reference = _split_last_answer(
            _messages(row["messages"], where, "messages"), where, "messages"
        )
        rest = {k: v for k, v in row.items() if k != "messages"}
    elif "prompt" in row and "chosen" in row:
        prompt = _messages(row["prompt"], where, "prompt")
        chosen = row["chosen"]
        if isinstance(chosen, str):
            reference = chosen
        else:
            answers = [m["content"] for m in _messages(chosen, where, "chosen") if m["role"] == "assistant"]
            if not answers:
                raise DataError(f"{where}: `chosen` has no assistant message to use as the reference")
            reference = answers[-1]
        rest = {k: v for k, v in row.items() if k not in ("prompt", "chosen", "rejected")}
    elif "text" in row and isinstance(row["text"], list):
        prompt, reference = _split_last_answer(_messages(row["text"], where, "text"), where, "text")
        rest = {k: v for k, v in row.items() if k != "text"}
    elif "text" in row and "standard_answer" in row:
        if not isinstance(row["text"], str) or not isinstance(row["standard_answer"], str):
            raise DataError(f"{where}: `text` and `standard_answer` must be text")
        prompt, reference = [{"role": "user", "content": row["text"]}], row["standard_answer"]
        rest = {k: v for k, v in row.items() if k not in ("text", "standard_answer")}
    else:
        raise DataError(
            f"{where}: unrecognised row with keys {sorted(row)}; expected `messages` (sft), "
            "`prompt` + `chosen` (preference) or `text` + `standard_answer` (LLaMA-Factory replay)"
        )
    metadata = rest.pop("metadata", None) or {}
    if not isinstance(metadata, dict):
        raise DataError(f"{where}: `metadata` must be an object")
    # Canonical rows keep extra fields under `metadata`; replay rows carry them at the top level.
    metadata = {**rest, **metadata}
    metadata.setdefault("source", where)
    return Example(index=index, prompt=prompt, reference=reference, metadata=metadata, source=where)


def _jsonl_rows(text: str, name: str) -> Iterator[tuple[Any, str]]:
    for lineno, line in enumerate(io.StringIO(text), start=1):
        if not line.strip():
            continue
        try:
            # Without its line break, so that a row cut short is reported at its own end, not at
            # "column 1" of a next line that is not there.
            yield strict_json.loads(line.rstrip("\r\n")), f"{name}:{lineno}"
        except strict_json.JSONProblem as problem:
            raise DataError(f"{name}:{lineno}: {problem.message}") from None


def _json_array_rows(text: str, name: str) -> Iterator[tuple[Any, str]]:
    """The elements of a top-level JSON array, each with the line it starts on."""
    decoder = strict_json.decoder()
    try:
        position = _skip_space(text, 0)
        if text[position : position + 1] != "[":
            raise DataError(f"{name}:1: expected a JSON array of rows")
        position = _skip_space(text, position + 1)
        if text[position : position + 1] == "]":
            return
        while True:
            where = f"{name}:{text.count(chr(10), 0, position) + 1}"
            try:
                value, end = decoder.raw_decode(text, position)
                strict_json.check(text[position:end], value)
            except strict_json.JSONProblem as problem:
                raise DataError(f"{where}: {problem.message}") from None
            yield value, where
            position = _skip_space(text, end)
            if text[position : position + 1] == "]":
                return
            if text[position : position + 1] != ",":
                line = text.count("\n", 0, position) + 1
                raise DataError(f"{name}:{line}: expected ',' or ']' between rows")
            position = _skip_space(text, position + 1)
    except json.JSONDecodeError as exc:
        raise DataError(f"{name}:{exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from None


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\r\n":
        position += 1
    return position


def _file_uri(uri: str, split: str) -> str:
    """The file to read: `uri` itself, or `<uri>/<split>.jsonl` for a prepared dataset directory."""
    if uri.endswith((".json", ".jsonl")):
        return uri
    candidate = storage.join(uri, f"{split}.jsonl")
    if storage.exists(candidate):
        return candidate
    raise DataError(f"{uri}: neither a .json/.jsonl file nor a prepared dataset directory with {split}.jsonl")


def load_test_set(uri: str, split: str = "test", max_samples: int | None = None) -> list[Example]:
    file_uri = _file_uri(uri, split)
    if not storage.exists(file_uri):
        raise DataError(f"{file_uri}: no such test set")
    name = file_uri.removeprefix("file://")
    try:
        text = storage.read_text(file_uri).lstrip("\ufeff")
    except UnicodeDecodeError as exc:
        raise DataError(f"{name}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    rows = _json_array_rows(text, name) if file_uri.endswith(".json") else _jsonl_rows(text, name)
    examples: list[Example] = []
    for row, where in rows:
        if max_samples is not None and len(examples) >= max_samples:
            break
        examples.append(row_to_example(row, len(examples), where))
    if not examples:
        raise DataError(f"{name}: the test set has no rows")
    return examples
