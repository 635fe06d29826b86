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
RowKind = Literal["sft", "preference"]


@dataclass
class PreparedDataset:
    uri: str
    fingerprint: str
    train: list[dict[str, Any]]
    test: list[dict[str, Any]]


def _messages(value: Any, where: str, key: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: {key}: must be a non-empty list of messages")
    messages = []
    for index, message in enumerate(value):
        if not isinstance(message, dict):
            raise DataError(f"{where}: {key}[{index}]: must be an object with role and content")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise DataError(f"{where}: {key}[{index}].role: must be one of {', '.join(ROLES)}, got {role!r}")
        if not isinstance(content, str):
            raise DataError(f"{where}: {key}[{index}].content: must be a string")
        messages.append({"role": role, "content": content})
    return messages


def _source(row: dict[str, Any], where: str) -> str:
    metadata = row.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("source"), str):
        return metadata["source"]
    return where


def parse_row(row: Any, kind: RowKind, where: str) -> dict[str, Any]:
    """A canonical row reduced to what the trainer reads, plus its `source` for messages."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: must be a JSON object")
    if kind == "sft":
        messages = _messages(row.get("messages"), where, "messages")
        if not any(m["role"] == "assistant" for m in messages):
            raise DataError(f"{where}: messages: has no assistant message to learn from")
        return {"messages": messages, "source": _source(row, where)}
    parsed: dict[str, Any] = {
        key: _messages(row.get(key), where, key) for key in ("prompt", "chosen", "rejected")
    }
    for key in ("chosen", "rejected"):
        if parsed[key][-1]["role"] != "assistant":
            raise DataError(f"{where}: {key}: must end with an assistant message")
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
