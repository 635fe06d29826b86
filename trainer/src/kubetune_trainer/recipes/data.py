"""Prepared datasets in, trainer-ready rows out.

A prepared dataset (contracts §6) is a directory with train.jsonl, test.jsonl and manifest.json
(its `fingerprint`). Rows are checked again here, because a hand-edited file reaches the trainer as
easily as a prepared one; any bad row names its file and line. SFT rows are tokenised here, with the
tokenizer's own chat template, into input_ids, labels (assistant turns only, by default) and
optional per-token loss weights for key tokens.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from kubetune_trainer import storage
from kubetune_trainer.errors import DataError, FingerprintMismatch, StorageError
from kubetune_trainer.recipes.config import TrainConfig

log = logging.getLogger(__name__)

ROLES = ("system", "user", "assistant", "tool")
SPLITS = ("train", "test")


@dataclass
class PreparedDataset:
    uri: str
    fingerprint: str
    train: list[dict[str, Any]]
    test: list[dict[str, Any]]


@dataclass
class TokenizeStats:
    rows: int = 0
    truncated: int = 0
    dropped: dict[str, list[str]] = field(default_factory=dict)

    def drop(self, reason: str, source: str) -> None:
        self.dropped.setdefault(reason, []).append(source)

    def summary(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "truncated": self.truncated,
            "dropped": {reason: len(sources) for reason, sources in self.dropped.items()},
        }


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


def parse_row(row: Any, method: str, where: str) -> dict[str, Any]:
    """A canonical row reduced to what the trainer reads, plus its `source` for messages."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: must be a JSON object")
    if method == "sft":
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


def read_split(uri: str, method: str) -> list[dict[str, Any]]:
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
            rows.append(parse_row(row, method, where))
    return rows


def load_prepared(config: TrainConfig) -> PreparedDataset:
    uri = storage.parse(config.dataset).uri.rstrip("/")
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
    if config.dataset_fingerprint and config.dataset_fingerprint != fingerprint:
        raise FingerprintMismatch(
            f"dataset_fingerprint: expected {config.dataset_fingerprint}, but {manifest_uri} has {fingerprint}"
        )
    splits = {}
    for split in SPLITS:
        split_uri = storage.join(uri, f"{split}.jsonl")
        if split == "test" and not storage.exists(split_uri):
            splits[split] = []
            continue
        try:
            splits[split] = read_split(split_uri, config.method)
        except StorageError as exc:
            raise DataError(f"dataset: {split_uri}: {exc.message}") from exc
    if not splits["train"]:
        raise DataError(f"dataset: {storage.join(uri, 'train.jsonl')}: has no rows to train on")
    return PreparedDataset(uri, fingerprint, splits["train"], splits["test"])


def _render(tokenizer, messages: list[dict[str, str]], generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def refused_by_template(source: str, exc: Exception) -> DataError:
    return DataError(f"{source}: the base model's chat template refuses this conversation: {exc}")


def check_pairs_render(tokenizer, rows: list[dict[str, Any]]) -> None:
    """Render every pair as TRL's DPOTrainer does; DataError naming the first one the template refuses.

    Called once TRL has failed on a template error, which names no row.
    """
    from jinja2 import TemplateError

    for row in rows:
        try:
            _render(tokenizer, row["prompt"], generation_prompt=True)
            for key in ("chosen", "rejected"):
                _render(tokenizer, row["prompt"] + row[key])
        except TemplateError as exc:
            raise refused_by_template(row["source"], exc) from exc


def _shared_prefix(a: str, b: str) -> int:
    length = min(len(a), len(b))
    return next((i for i in range(length) if a[i] != b[i]), length)


def assistant_spans(tokenizer, messages: list[dict[str, str]], text: str) -> list[tuple[int, int]]:
    """Character spans of the assistant turns in `text`, each through its end-of-turn token.

    Found by rendering each prefix of the conversation with the tokenizer's own template, so that
    it works for templates without `{% generation %}` markers (Qwen2.5's among them).
    """
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = _shared_prefix(_render(tokenizer, messages[:index], True), text)
        end = _shared_prefix(_render(tokenizer, messages[: index + 1]), text)
        end = start + len(text[start:end].rstrip())
        if end > start:
            spans.append((start, end))
    return spans


def _overlaps(token: tuple[int, int], spans: list[tuple[int, int]]) -> bool:
    return any(token[0] < end and token[1] > start for start, end in spans)


class SFTTokenizer:
    """Turns conversations into input_ids, labels and (with key_token_patterns) token_weights."""

    def __init__(self, tokenizer, config: TrainConfig):
        self.tokenizer = tokenizer
        self.cutoff_len = config.cutoff_len
        self.completion_only = config.completion_only_loss
        self.patterns = [re.compile(p) for p in config.key_token_patterns]
        self.key_weight = config.key_token_weight

    def encode(self, messages: list[dict[str, str]]) -> tuple[dict[str, list], int]:
        """The trainer row, cut to cutoff_len, and the length before the cut."""
        text = _render(self.tokenizer, messages)
        encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
        trainable = (
            assistant_spans(self.tokenizer, messages, text) if self.completion_only else [(0, len(text))]
        )
        labels = [t if _overlaps(o, trainable) else -100 for t, o in zip(ids, offsets, strict=True)]
        row: dict[str, list] = {"input_ids": ids[: self.cutoff_len], "labels": labels[: self.cutoff_len]}
        if self.patterns:
            keys = [m.span() for p in self.patterns for m in p.finditer(text) if m.end() > m.start()]
            weights = [self.key_weight if _overlaps(o, keys) else 1.0 for o in offsets]
            row["token_weights"] = weights[: self.cutoff_len]
        return row, len(ids)

    def dataset(self, rows: list[dict[str, Any]], stats: TokenizeStats, packing: bool):
        """A datasets.Dataset of tokenised rows; rows with nothing left to learn are dropped and counted."""
        from datasets import Dataset
        from jinja2 import TemplateError

        tokenised = []
        for row in rows:
            stats.rows += 1
            try:
                item, full_length = self.encode(row["messages"])
            except TemplateError as exc:
                raise refused_by_template(row["source"], exc) from exc
            if full_length > self.cutoff_len:
                stats.truncated += 1
            if all(label == -100 for label in item["labels"][1:]):
                stats.drop("no_trainable_tokens_within_cutoff_len", row["source"])
                continue
            tokenised.append(item)
        dataset = Dataset.from_list(tokenised) if tokenised else None
        if dataset is not None and packing:
            from trl import pack_dataset

            dataset = pack_dataset(dataset, self.cutoff_len, strategy="bfd")
        return dataset


def report_drops(stats: TokenizeStats, split: str) -> None:
    for reason, sources in stats.dropped.items():
        shown = ", ".join(sources[:5]) + (", ..." if len(sources) > 5 else "")
        log.warning("%s: dropped %d row(s) (%s): %s", split, len(sources), reason, shown)
