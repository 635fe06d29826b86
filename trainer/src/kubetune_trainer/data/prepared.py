"""A prepared dataset read back for training: what `data prepare` (prepare.py) publishes.

A prepared dataset (contracts §6) is a directory with train.jsonl, test.jsonl and manifest.json
(its `fingerprint`). Rows are checked again here, because a hand-edited file reaches the trainer as
easily as a prepared one; any bad row names its file and line. Messages name the TrainConfig fields
(`dataset`, `dataset_fingerprint`) the caller took the URI and fingerprint from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from kubetune_trainer import storage
from kubetune_trainer.errors import DataError, FingerprintMismatch, StorageError

ROLES = ("system", "user", "assistant", "tool")
SPLITS = ("train", "test")
# Which canonical rows a method trains on (docs/contracts.md §6).
RowKind = Literal["sft", "preference", "kto"]
ROW_KEYS = {"sft": ("messages",), "preference": ("prompt", "chosen", "rejected"), "kto": ("prompt", "completion")}


@dataclass
class PreparedDataset:
    uri: str
    fingerprint: str
    train: list[dict[str, Any]]
    test: list[dict[str, Any]]


def _messages(value: Any, where: str, key: str) -> list[dict[str, Any]]:
    """Messages as data prepare writes them: role and content, an assistant's tool_calls and loss_weight,
    a tool result's name and tool_call_id."""
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: {key}: must be a non-empty list of messages")
    messages = []
    for index, message in enumerate(value):
        at = f"{where}: {key}[{index}]"
        if not isinstance(message, dict):
            raise DataError(f"{at}: must be an object with role and content")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise DataError(f"{at}.role: must be one of {', '.join(ROLES)}, got {role!r}")
        if not isinstance(content, str):
            raise DataError(f"{at}.content: must be a string")
        parsed: dict[str, Any] = {"role": role, "content": content}
        calls = message.get("tool_calls")
        if calls is not None:
            if role != "assistant" or not isinstance(calls, list) or not all(
                isinstance(c, dict) and isinstance(c.get("function"), dict) for c in calls
            ):
                raise DataError(f"{at}.tool_calls: must be an assistant's list of {{type, function}} calls")
            parsed["tool_calls"] = calls
        for name in ("name", "tool_call_id"):
            if message.get(name) is not None:
                if role != "tool" or not isinstance(message[name], str):
                    raise DataError(f"{at}.{name}: must be a string on a tool message")
                parsed[name] = message[name]
        weight = message.get("loss_weight")
        if weight is not None:
            if role != "assistant" or isinstance(weight, bool) or not isinstance(weight, int | float) or weight < 0:
                raise DataError(f"{at}.loss_weight: must be a number of 0 or more on an assistant message")
            parsed["loss_weight"] = float(weight)
        messages.append(parsed)
    return messages


def _tools(value: Any, where: str) -> list[dict[str, Any]] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise DataError(f"{where}: tools: must be a list of tool definitions")
    return value


def _source(row: dict[str, Any], where: str) -> str:
    metadata = row.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("source"), str):
        return metadata["source"]
    return where


def parse_row(row: Any, kind: RowKind, where: str) -> dict[str, Any]:
    """A canonical row reduced to what the trainer reads, plus its `source` for messages."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: must be a JSON object")
    missing = [key for key in ROW_KEYS[kind] if key not in row]
    if missing:
        holds = next((k for k, keys in ROW_KEYS.items() if all(key in row for key in keys)), None)
        also = f" (it holds {holds} rows: train them with a method that reads those)" if holds else ""
        raise DataError(f"{where}: {missing[0]}: missing; a {kind} row needs {', '.join(ROW_KEYS[kind])}{also}")
    if kind == "sft":
        messages = _messages(row.get("messages"), where, "messages")
        if not any(m["role"] == "assistant" for m in messages):
            raise DataError(f"{where}: messages: has no assistant message to learn from")
        parsed = {"messages": messages, "source": _source(row, where)}
        tools = _tools(row.get("tools"), where)
        return parsed | {"tools": tools} if tools else parsed
    parsed: dict[str, Any] = {key: _messages(row.get(key), where, key) for key in ROW_KEYS[kind]}
    for key in ROW_KEYS[kind][1:]:
        if parsed[key][-1]["role"] != "assistant":
            raise DataError(f"{where}: {key}: must end with an assistant message")
    if kind == "kto":
        if not isinstance(row.get("label"), bool):
            raise DataError(f"{where}: label: must be true (desirable) or false (undesirable)")
        parsed["label"] = row["label"]
    return parsed | {"source": _source(row, where)}


def read_split(uri: str, kind: RowKind) -> list[dict[str, Any]]:
    rows = []
    with storage.open_read(uri) as handle:
        for number, raw in enumerate(handle, start=1):
            where = f"{uri}:{number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{where}: not UTF-8 ({exc})") from exc
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{where}: not JSON ({exc.msg} at column {exc.colno})") from exc
            rows.append(parse_row(row, kind, where))
    return rows


def load_prepared(dataset: str, kind: RowKind, expected_fingerprint: str | None = None) -> PreparedDataset:
    uri = storage.parse(dataset).uri.rstrip("/")
    manifest_uri = storage.join(uri, "manifest.json")
    try:
        manifest = json.loads(storage.read_text(manifest_uri))
    except StorageError as exc:
        raise DataError(f"dataset: {exc.message} (is this a prepared dataset?)") from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"dataset: {manifest_uri}: not JSON ({exc})") from exc
    fingerprint = manifest.get("fingerprint") if isinstance(manifest, dict) else None
    if not isinstance(fingerprint, str):
        raise DataError(f"dataset: {manifest_uri}: has no fingerprint")
    if expected_fingerprint and expected_fingerprint != fingerprint:
        raise FingerprintMismatch(
            f"dataset_fingerprint: expected {expected_fingerprint}, but {manifest_uri} has {fingerprint}"
        )
    splits = {}
    for split in SPLITS:
        split_uri = storage.join(uri, f"{split}.jsonl")
        if split == "test" and not storage.exists(split_uri):
            splits[split] = []
            continue
        try:
            splits[split] = read_split(split_uri, kind)
        except StorageError as exc:
            raise DataError(f"dataset: {split_uri}: {exc.message}") from exc
    if not splits["train"]:
        raise DataError(f"dataset: {storage.join(uri, 'train.jsonl')}: has no rows to train on")
    return PreparedDataset(uri, fingerprint, splits["train"], splits["test"])
