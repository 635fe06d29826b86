"""LLaMA-Factory datasets: a `dataset_info.json` entry (or an inline column map) and its two layouts.

Columns and tags resolve exactly as LLaMA-Factory's `DatasetAttr.join` does: without `columns`
the alpaca defaults are instruction/input/output and the sharegpt default is conversations;
with `columns`, every column it does not name is unset. The same holds for `tags`. Rows then
convert the way its `AlpacaDatasetConverter` and `SharegptDatasetConverter` build prompts.
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any

from kubetune_trainer import storage, strict_json
from kubetune_trainer.data import validate
from kubetune_trainer.data.validate import RowError, leftover, message, text
from kubetune_trainer.errors import ConfigError, KubetuneError

log = logging.getLogger(__name__)

COLUMNS = ("prompt", "query", "response", "history", "messages", "system", "tools")
COLUMNS += ("images", "videos", "audios", "chosen", "rejected", "kto_tag")
TAGS = (
    "role_tag",
    "content_tag",
    "user_tag",
    "assistant_tag",
    "observation_tag",
    "function_tag",
    "system_tag",
)
# Columns whose rows need a model feature a text preference/SFT dataset does not carry.
UNSUPPORTED_COLUMNS = {
    "tools": "tool definitions",
    "images": "images",
    "videos": "videos",
    "audios": "audio",
    "kto_tag": "KTO labels",
}
HUB_KEYS = ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name")
# Keys an entry may carry that only matter for hub downloads or LLaMA-Factory's own cache.
IGNORED_KEYS = ("subset", "split", "folder", "file_sha1")
ENTRY_KEYS = (
    "file_name",
    "formatting",
    "ranking",
    "columns",
    "tags",
    "num_samples",
    *IGNORED_KEYS,
    *HUB_KEYS,
)


@dataclass(frozen=True)
class DatasetAttr:
    formatting: str = "alpaca"
    ranking: bool = False
    system: str | None = None
    tools: str | None = None
    images: str | None = None
    videos: str | None = None
    audios: str | None = None
    chosen: str | None = None
    rejected: str | None = None
    kto_tag: str | None = None
    prompt: str | None = "instruction"
    query: str | None = "input"
    response: str | None = "output"
    history: str | None = None
    messages: str | None = "conversations"
    role_tag: str | None = "from"
    content_tag: str | None = "value"
    user_tag: str | None = "human"
    assistant_tag: str | None = "gpt"
    observation_tag: str | None = "observation"
    function_tag: str | None = "function_call"
    system_tag: str | None = "system"

    def describe(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


def _names(mapping: Any, allowed: tuple[str, ...], where: str) -> dict[str, str | None]:
    if not isinstance(mapping, dict):
        raise ConfigError(f"{where} must be an object")
    unknown = sorted(set(mapping) - set(allowed))
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key (known: {', '.join(allowed)})")
    for key, value in mapping.items():
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{where}.{key} must be a column name (a string)")
    # LLaMA-Factory's set_attr: a key the mapping leaves out becomes None.
    return {key: mapping.get(key) for key in allowed}


def join(entry: dict[str, Any], where: str) -> DatasetAttr:
    """An entry's attributes, the way LLaMA-Factory's DatasetAttr.join reads them."""
    formatting = entry.get("formatting", "alpaca")
    if formatting not in ("alpaca", "sharegpt"):
        raise ConfigError(f"{where}.formatting: {formatting!r} is not supported (use alpaca or sharegpt)")
    ranking = entry.get("ranking", False)
    if not isinstance(ranking, bool):
        raise ConfigError(f"{where}.ranking must be true or false")
    attr = DatasetAttr(formatting=formatting, ranking=ranking)
    if "columns" in entry:
        attr = replace(attr, **_names(entry["columns"], COLUMNS, f"{where}.columns"))
    if "tags" in entry:
        attr = replace(attr, **_names(entry["tags"], TAGS, f"{where}.tags"))
    for column, feature in UNSUPPORTED_COLUMNS.items():
        if getattr(attr, column):
            raise ConfigError(f"{where}.columns.{column}: datasets with {feature} are not supported")
    if attr.formatting == "sharegpt":
        for tag in ("role_tag", "content_tag", "user_tag", "assistant_tag"):
            if not getattr(attr, tag):
                raise ConfigError(
                    f"{where}.tags.{tag} is unset (LLaMA-Factory unsets every tag a `tags` map leaves out)"
                )
    return attr


def defaults(formatting: str, kind: str) -> DatasetAttr:
    """The attributes of a layout used without dataset_info.json; ranking files name chosen/rejected."""
    ranking = kind == "preference"
    attr = DatasetAttr(formatting=formatting, ranking=ranking)
    return replace(attr, chosen="chosen", rejected="rejected") if ranking else attr


def from_column_map(raw: str, formatting: str | None, kind: str) -> DatasetAttr:
    """`--column-map '{"columns": {...}, "tags": {...}}'`: an inline dataset_info entry (it may also
    carry formatting and ranking)."""
    try:
        entry = strict_json.loads(raw)
    except strict_json.JSONProblem as problem:
        raise ConfigError(f"--column-map: {problem.message}") from None
    if not isinstance(entry, dict):
        raise ConfigError("--column-map must be a JSON object with `columns` and/or `tags`")
    unknown = sorted(set(entry) - {"columns", "tags", "formatting", "ranking"})
    if unknown:
        raise ConfigError(
            f'--column-map.{unknown[0]}: unknown key; put column names under "columns" and sharegpt tags '
            'under "tags"'
        )
    given = entry.get("formatting")
    if formatting and given and formatting != given:
        raise ConfigError(f"--format {formatting}, but --column-map.formatting is {given}")
    columns = entry.get("columns")
    names_messages = isinstance(columns, dict) and "messages" in columns
    entry = {"ranking": kind == "preference", **entry}
    entry["formatting"] = (
        formatting or given or ("sharegpt" if "tags" in entry or names_messages else "alpaca")
    )
    return _checked(join(entry, "--column-map"), kind, "--column-map")


def _checked(attr: DatasetAttr, kind: str, where: str) -> DatasetAttr:
    """The entry must hold the kind of rows asked for, and a ranking one must name its answers."""
    if attr.ranking != (kind == "preference"):
        raise ConfigError(
            f"{where}.ranking is {str(attr.ranking).lower()}, which makes "
            f"{'preference' if attr.ranking else 'sft'} rows, but --kind is {kind}"
        )
    if attr.ranking and not (attr.chosen and attr.rejected):
        raise ConfigError(f"{where}.columns: a ranking dataset must name its chosen and rejected columns")
    return attr


def load_entry(info_uri: str, name: str, kind: str) -> tuple[DatasetAttr, str | None]:
    """The attributes of entry `name` in a dataset_info.json, and the URI its file_name points to."""
    try:
        info = strict_json.loads(storage.read_bytes(info_uri))
    except strict_json.JSONProblem as problem:
        raise ConfigError(f"--dataset-info {info_uri}: {problem.message}") from None
    except KubetuneError as exc:
        raise ConfigError(f"--dataset-info: {exc.message}") from exc
    if not isinstance(info, dict):
        raise ConfigError(f"--dataset-info {info_uri}: expected an object of named datasets")
    if name not in info:
        known = validate.listed(sorted(info), "entries") or "none"
        raise ConfigError(f"--dataset {name}: no such entry in {info_uri} (entries: {known})")
    entry = info[name]
    where = f"{info_uri} [{name}]"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: the entry must be an object")
    for key in HUB_KEYS:
        if key in entry:
            raise ConfigError(
                f"{where}.{key}: hub and script datasets are not read; point file_name at a copy"
            )
    unknown = sorted(set(entry) - set(ENTRY_KEYS))
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key (known: {', '.join(ENTRY_KEYS)})")
    if "num_samples" in entry:
        log.warning("%s.num_samples is not applied (LLaMA-Factory samples at random); use --max-rows", where)
    attr = _checked(join(entry, where), kind, where)
    file_name = entry.get("file_name")
    if file_name is None:
        return attr, None
    if not isinstance(file_name, str) or not file_name:
        raise ConfigError(f"{where}.file_name must be a path")
    return attr, _beside(info_uri, file_name)


def _beside(info_uri: str, file_name: str) -> str:
    """file_name as LLaMA-Factory resolves it: relative to the directory holding dataset_info.json."""
    if "://" in file_name or file_name.startswith("/"):
        return file_name
    loc = storage.parse(info_uri)
    if loc.scheme == "s3":
        return f"s3://{loc.bucket}/{posixpath.join(posixpath.dirname(loc.path), file_name)}"
    return posixpath.join(posixpath.dirname(loc.path), file_name)


Converter = Callable[[dict], tuple[dict, dict]]


def _optional_text(row: dict, column: str | None) -> str | None:
    """A column LLaMA-Factory reads only when it holds something (`if example[column]`)."""
    value = row.get(column) if column else None
    if not value:
        return None
    if type(value) is not str:
        raise RowError("non_string_content", f"{column} is {validate.type_name(value)}, not a string")
    return value


def alpaca(attr: DatasetAttr, kind: str) -> Converter:
    answer_columns = (attr.chosen, attr.rejected) if kind == "preference" else (attr.response,)
    consumed = {c for c in (attr.prompt, attr.query, attr.history, attr.system, *answer_columns) if c}

    def convert(row: dict) -> tuple[dict, dict]:
        prompt = []
        system = _optional_text(row, attr.system)
        if system:
            prompt.append(message("system", system))
        history = row.get(attr.history) if attr.history else None
        if isinstance(history, list):
            for index, turn in enumerate(history):
                where = f"{attr.history}[{index}]"
                if type(turn) is not list or len(turn) != 2:
                    raise RowError("wrong_type", f"{where} must be a [query, response] pair")
                prompt.append(message("user", text(turn[0], f"{where}[0]")))
                prompt.append(message("assistant", text(turn[1], f"{where}[1]")))
        query = [part for part in (_optional_text(row, attr.prompt), _optional_text(row, attr.query)) if part]
        if not query:
            named = " and ".join(c for c in (attr.prompt, attr.query) if c) or "the prompt"
            raise RowError("empty_content", f"{named}: no prompt text")
        prompt.append(message("user", "\n".join(query)))
        metadata = leftover(row, consumed)
        if kind == "preference":
            chosen = [message("assistant", text(row.get(attr.chosen), attr.chosen))]
            rejected = [message("assistant", text(row.get(attr.rejected), attr.rejected))]
            return {"prompt": prompt, "chosen": chosen, "rejected": rejected}, metadata
        if not attr.response:
            raise RowError("missing_field", "no response column is mapped")
        answer = message("assistant", text(row.get(attr.response), attr.response))
        return {"messages": [*prompt, answer]}, metadata

    return convert


def sharegpt(attr: DatasetAttr, kind: str) -> Converter:
    roles = {attr.user_tag: "user", attr.assistant_tag: "assistant"}
    tool_tags = {tag for tag in (attr.observation_tag, attr.function_tag) if tag}
    consumed = {c for c in (attr.messages, attr.system) if c}
    if kind == "preference":
        consumed |= {attr.chosen, attr.rejected}
    column = attr.messages or "conversations"

    def turn_role(tag: Any, where: str, expected: str) -> str:
        if tag in tool_tags:
            raise RowError("unknown_role", f"{where} is a tool turn ({tag}); tool calls are not supported")
        if tag not in roles:
            raise RowError(
                "unknown_role",
                f"{where} is {validate.shown(tag)}; expected {attr.user_tag} or {attr.assistant_tag}",
            )
        if tag != expected:
            raise RowError("wrong_role_order", f"{where} is {tag}, expected {expected}")
        return roles[tag]

    def answer(row: dict, key: str) -> list[dict]:
        turn = validate.obj(row.get(key), key)
        role = turn_role(turn.get(attr.role_tag), f"{key}.{attr.role_tag}", attr.assistant_tag)
        return [message(role, text(turn.get(attr.content_tag), f"{key}.{attr.content_tag}"))]

    def convert(row: dict) -> tuple[dict, dict]:
        turns = validate.items(row.get(column), column)
        for index, turn in enumerate(turns):
            if type(turn) is not dict:
                raise RowError(
                    "wrong_type", f"{column}[{index}] is {validate.type_name(turn)}, not an object"
                )
        prompt = []
        offset = 0
        if attr.system_tag and turns[0].get(attr.role_tag) == attr.system_tag:
            prompt.append(
                message("system", text(turns[0].get(attr.content_tag), f"{column}[0].{attr.content_tag}"))
            )
            offset = 1
        else:
            system = _optional_text(row, attr.system)
            if system:
                prompt.append(message("system", system))
        for index in range(offset, len(turns)):
            where = f"{column}[{index}]"
            expected = attr.user_tag if (index - offset) % 2 == 0 else attr.assistant_tag
            role = turn_role(turns[index].get(attr.role_tag), f"{where}.{attr.role_tag}", expected)
            prompt.append(
                message(role, text(turns[index].get(attr.content_tag), f"{where}.{attr.content_tag}"))
            )
        said = len(turns) - offset
        metadata = leftover(row, consumed)
        if kind == "preference":
            if said % 2 == 0:
                raise RowError(
                    "wrong_role_order", f"{column}: a ranking conversation must end with a user turn"
                )
            return {
                "prompt": prompt,
                "chosen": answer(row, attr.chosen),
                "rejected": answer(row, attr.rejected),
            }, metadata
        if said == 0 or said % 2:
            raise RowError("wrong_role_order", f"{column}: the conversation must end with an assistant turn")
        return {"messages": prompt}, metadata

    return convert
