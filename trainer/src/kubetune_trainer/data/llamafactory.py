"""LLaMA-Factory datasets: a `dataset_info.json` entry (or an inline column map) and its two layouts.

Columns and tags resolve exactly as LLaMA-Factory's `DatasetAttr.join` does: without `columns`
the alpaca defaults are instruction/input/output and the sharegpt default is conversations;
with `columns`, every column it does not name is unset. The same holds for `tags`. Rows then
convert the way its `AlpacaDatasetConverter` and `SharegptDatasetConverter` build prompts: tool
calls (function_call turns) and their results (observation turns) for SFT, a `kto_tag` column for KTO.
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
# Columns whose rows need a model feature a text dataset does not carry.
UNSUPPORTED_COLUMNS = {
    "images": "images",
    "videos": "videos",
    "audios": "audio",
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
    """The attributes of a layout used without dataset_info.json: ranking files name chosen/rejected,
    KTO files hold their label in `label` (as TRL's and LLaMA-Factory's KTO samples do), and a `tools`
    column is read for SFT."""
    ranking = kind == "preference"
    attr = DatasetAttr(formatting=formatting, ranking=ranking)
    if ranking:
        return replace(attr, chosen="chosen", rejected="rejected")
    if kind == "kto":
        return replace(attr, kto_tag="label")
    return replace(attr, tools="tools")


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
    if kind == "kto" and not (isinstance(columns, dict) and "kto_tag" in columns):
        # An inline map of KTO rows reads its label from `label` unless it names another column.
        entry["columns"] = {**(columns if isinstance(columns, dict) else {}), "kto_tag": "label"}
    entry["formatting"] = (
        formatting or given or ("sharegpt" if "tags" in entry or names_messages else "alpaca")
    )
    return _checked(join(entry, "--column-map"), kind, "--column-map")


def _checked(attr: DatasetAttr, kind: str, where: str) -> DatasetAttr:
    """The entry must hold the kind of rows asked for: a ranking one names its answers, a KTO one its
    labels, and tools are read for SFT."""
    if kind == "kto" and not attr.kto_tag:
        raise ConfigError(f"{where}.columns.kto_tag: KTO rows need the column holding each answer's label")
    if kind != "kto" and attr.kto_tag:
        raise ConfigError(f"{where}.columns.kto_tag makes KTO rows (a label per answer), but --kind is {kind}")
    if kind != "sft" and attr.tools:
        raise ConfigError(f"{where}.columns.tools: tool calling is read for --kind sft only, not {kind}")
    if attr.ranking != (kind == "preference"):
        raise ConfigError(
            f"{where}.ranking is {str(attr.ranking).lower()}, which makes "
            f"{'preference' if attr.ranking else 'sft or kto'} rows, but --kind is {kind}"
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


def _tools(row: dict, attr: DatasetAttr) -> list[dict]:
    return validate.tools(row.get(attr.tools), attr.tools) if attr.tools else []


def alpaca(attr: DatasetAttr, kind: str) -> Converter:
    answer_columns = {
        "preference": (attr.chosen, attr.rejected),
        "kto": (attr.response, attr.kto_tag),
        "sft": (attr.response, attr.tools),
    }[kind]
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
        if kind == "kto":
            return {
                "prompt": prompt,
                "completion": [answer],
                "label": validate.label(row.get(attr.kto_tag), attr.kto_tag),
            }, metadata
        return validate.sft_row([*prompt, answer], _tools(row, attr)), metadata

    return convert


def sharegpt(attr: DatasetAttr, kind: str) -> Converter:
    """Turns alternate: user or observation (a tool's result) at odd positions, assistant or function
    call at even ones, as LLaMA-Factory requires; a function_call turn holds the call as JSON."""
    roles = {attr.user_tag: "user", attr.assistant_tag: "assistant"}
    if attr.observation_tag:
        roles[attr.observation_tag] = "tool"
    if attr.function_tag:
        roles[attr.function_tag] = "assistant"
    odd = tuple(tag for tag in (attr.user_tag, attr.observation_tag) if tag)
    even = tuple(tag for tag in (attr.assistant_tag, attr.function_tag) if tag)
    consumed = {c for c in (attr.messages, attr.system, attr.tools if kind == "sft" else None) if c}
    if kind == "preference":
        consumed |= {attr.chosen, attr.rejected}
    if kind == "kto":
        consumed.add(attr.kto_tag)
    column = attr.messages or "conversations"

    def turn(value: dict, where: str, expected: tuple[str, ...]) -> dict:
        tag = value.get(attr.role_tag)
        at = f"{where}.{attr.role_tag}"
        if tag not in roles:
            raise RowError(
                "unknown_role",
                f"{at} is {validate.shown(tag)}; expected {' or '.join(t for t in (*odd, *even) if t)}",
            )
        if tag not in expected:
            raise RowError("wrong_role_order", f"{at} is {tag}, expected {' or '.join(expected)}")
        content_at = f"{where}.{attr.content_tag}"
        if tag == attr.function_tag:
            calls = validate.tool_calls(value.get(attr.content_tag), content_at)
            return {"role": "assistant", "content": "", "tool_calls": calls}
        return message(roles[tag], text(value.get(attr.content_tag), content_at))

    def answer(row: dict, key: str) -> list[dict]:
        return [turn(validate.obj(row.get(key), key), key, even)]

    def convert(row: dict) -> tuple[dict, dict]:
        turns = validate.items(row.get(column), column)
        for index, value in enumerate(turns):
            if type(value) is not dict:
                raise RowError(
                    "wrong_type", f"{column}[{index}] is {validate.type_name(value)}, not an object"
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
            prompt.append(turn(turns[index], f"{column}[{index}]", odd if (index - offset) % 2 == 0 else even))
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
        if kind == "kto":
            return {
                "prompt": prompt[:-1],
                "completion": prompt[-1:],
                "label": validate.label(row.get(attr.kto_tag), attr.kto_tag),
            }, metadata
        return validate.sft_row(prompt, _tools(row, attr)), metadata

    return convert
