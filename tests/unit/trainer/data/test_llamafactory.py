"""LLaMA-Factory entries resolve columns and tags as DatasetAttr.join does, and rows convert like its converters."""

from __future__ import annotations

import json

import pytest

from kubetune_trainer.data import llamafactory
from kubetune_trainer.data.llamafactory import DatasetAttr
from kubetune_trainer.data.validate import RowError, check_preference
from kubetune_trainer.errors import ConfigError


def entry_attr(entry: dict) -> DatasetAttr:
    return llamafactory.join(entry, "info [x]")


def test_without_columns_the_alpaca_and_sharegpt_defaults_hold():
    attr = entry_attr({"file_name": "f.json"})
    assert (attr.prompt, attr.query, attr.response, attr.messages) == ("instruction", "input", "output", "conversations")
    assert (attr.role_tag, attr.user_tag, attr.assistant_tag) == ("from", "human", "gpt")


def test_a_columns_map_unsets_every_column_it_leaves_out():
    attr = entry_attr({"ranking": True, "columns": {"prompt": "question", "chosen": "good", "rejected": "bad"}})
    assert (attr.prompt, attr.query, attr.response, attr.chosen) == ("question", None, None, "good")
    convert = llamafactory.alpaca(attr, "preference")
    content, metadata = convert({"question": "q", "input": "kept as metadata", "good": "a", "bad": "b"})
    assert content["prompt"] == [{"role": "user", "content": "q"}]
    assert metadata == {"input": "kept as metadata"}


def test_alpaca_system_history_and_response():
    attr = entry_attr({"columns": {"prompt": "instruction", "query": "input", "response": "output",
                                   "system": "system", "history": "history"}})
    convert = llamafactory.alpaca(attr, "sft")
    content, metadata = convert({
        "instruction": "Do it", "input": "", "output": "Done", "system": "Be brief",
        "history": [["hi", "hello"]], "id": 7,
    })
    assert content["messages"] == [
        {"role": "system", "content": "Be brief"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "Do it"},
        {"role": "assistant", "content": "Done"},
    ]
    assert metadata == {"id": 7}
    with pytest.raises(RowError, match=r"history\[0\] must be a \[query, response\] pair") as caught:
        convert({"instruction": "x", "output": "y", "history": [["only one"]]})
    assert caught.value.reason == "wrong_type"
    with pytest.raises(RowError, match="instruction and input: no prompt text"):
        convert({"instruction": "", "input": None, "output": "y"})


SHAREGPT_TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                 "assistant_tag": "assistant", "system_tag": "system"}


def test_sharegpt_with_openai_style_tags_and_a_leading_system_turn():
    attr = entry_attr({"formatting": "sharegpt", "columns": {"messages": "messages"}, "tags": SHAREGPT_TAGS})
    assert attr.observation_tag is None and attr.function_tag is None
    convert = llamafactory.sharegpt(attr, "sft")
    content, _ = convert({"messages": [
        {"role": "system", "content": "S"}, {"role": "user", "content": "U"}, {"role": "assistant", "content": "A"},
    ]})
    assert [m["role"] for m in content["messages"]] == ["system", "user", "assistant"]
    with pytest.raises(RowError, match="must end with an assistant turn"):
        convert({"messages": [{"role": "user", "content": "U"}]})
    with pytest.raises(RowError, match=r"messages\[1\]\.role is user, expected assistant") as caught:
        convert({"messages": [{"role": "user", "content": "U"}, {"role": "user", "content": "again"}]})
    assert caught.value.reason == "wrong_role_order"


def test_sharegpt_ranking_needs_a_user_turn_last_and_assistant_answers():
    attr = llamafactory.defaults("sharegpt", "preference")
    convert = llamafactory.sharegpt(attr, "preference")
    row = {"conversations": [{"from": "human", "value": "q"}],
           "chosen": {"from": "gpt", "value": "a"}, "rejected": {"from": "gpt", "value": "b"}}
    content, _ = convert(row)
    assert content["rejected"] == [{"role": "assistant", "content": "b"}]
    # A tool result reads as such, and preference rows refuse tool calling (SFT only).
    content, _ = convert(row | {"conversations": [{"from": "observation", "value": "42"}]})
    assert content["prompt"] == [{"role": "tool", "content": "42"}]
    with pytest.raises(RowError, match=r"prompt\[0\] is a tool result: tool calling is read for SFT rows only"):
        check_preference(content["prompt"], content["chosen"], content["rejected"])
    with pytest.raises(RowError, match=r"chosen\.from is human, expected gpt"):
        convert(row | {"chosen": {"from": "human", "value": "a"}})


def test_partial_tags_leave_required_ones_unset():
    with pytest.raises(ConfigError, match=r"info \[x\]\.tags\.role_tag is unset"):
        entry_attr({"formatting": "sharegpt", "tags": {"user_tag": "user"}})


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"formatting": "openai"}, r"formatting: 'openai' is not supported"),
        ({"columns": {"images": "images"}}, r"columns\.images: datasets with images are not supported"),
        ({"columns": {"prompt": 3}}, r"columns\.prompt must be a column name"),
        ({"columns": {"bogus": "x"}}, r"columns\.bogus: unknown key"),
        ({"ranking": "yes"}, r"ranking must be true or false"),
    ],
)
def test_bad_entries_name_the_key(entry, message):
    with pytest.raises(ConfigError, match=message):
        entry_attr(entry)


def write_info(tmp_path, entries: dict):
    path = tmp_path / "dataset_info.json"
    path.write_text(json.dumps(entries))
    return str(path)


def test_load_entry_resolves_file_name_beside_dataset_info(tmp_path):
    info = write_info(tmp_path, {"d": {"file_name": "sub/data.json", "ranking": True,
                                       "columns": {"prompt": "instruction", "chosen": "c", "rejected": "r"}}})
    attr, uri = llamafactory.load_entry(info, "d", "preference")
    assert uri == str(tmp_path / "sub" / "data.json")
    assert attr.chosen == "c"


@pytest.mark.parametrize(
    ("entries", "kind", "message"),
    [
        ({"other": {}}, "preference", r"--dataset d: no such entry .* \(entries: other\)"),
        ({"d": {"hf_hub_url": "org/x"}}, "preference", r"\[d\]\.hf_hub_url: hub and script datasets are not read"),
        ({"d": {"file_name": "x", "ranking": True}}, "sft", r"\[d\]\.ranking is true, which makes preference rows"),
        ({"d": {"file_name": "x", "ranking": True}}, "preference", "must name its chosen and rejected columns"),
        ({"d": {"file_name": "x", "bogus": 1}}, "sft", r"\[d\]\.bogus: unknown key"),
    ],
)
def test_load_entry_errors_name_the_entry_and_key(tmp_path, entries, kind, message):
    with pytest.raises(ConfigError, match=message):
        llamafactory.load_entry(write_info(tmp_path, entries), "d", kind)


def test_load_entry_reports_unreadable_files(tmp_path):
    (tmp_path / "dataset_info.json").write_text("{oops")
    with pytest.raises(ConfigError, match="not valid JSON"):
        llamafactory.load_entry(str(tmp_path / "dataset_info.json"), "d", "sft")
    with pytest.raises(ConfigError, match=r"--dataset-info: .*missing\.json"):
        llamafactory.load_entry(str(tmp_path / "missing.json"), "d", "sft")


def test_the_operators_inline_map_is_understood():
    # What kubetune_operator.builders.dataset.column_map renders for a sharegpt PreferenceDataset.
    inline = json.dumps({"columns": {"chosen": "c", "messages": "conv", "rejected": "r"},
                         "formatting": "sharegpt", "ranking": True, "tags": {"role_tag": "from", "content_tag": "value",
                                                                            "user_tag": "human", "assistant_tag": "gpt"}})
    attr = llamafactory.from_column_map(inline, None, "preference")
    assert (attr.formatting, attr.messages, attr.chosen, attr.system_tag) == ("sharegpt", "conv", "c", None)


@pytest.mark.parametrize(
    ("raw", "formatting", "kind", "message"),
    [
        ("{", None, "sft", "--column-map: not valid JSON"),
        ("[]", None, "sft", "must be a JSON object"),
        ('{"prompt": "q"}', None, "sft", r'--column-map\.prompt: unknown key; put column names under "columns"'),
        ('{"columns": {"prompt": "q"}}', None, "preference", "must name its chosen and rejected columns"),
        ('{"formatting": "alpaca"}', "sharegpt", "sft", r"--format sharegpt, but --column-map\.formatting is alpaca"),
        ('{"ranking": false}', None, "preference", r"--column-map\.ranking is false"),
    ],
)
def test_column_map_errors(raw, formatting, kind, message):
    with pytest.raises(ConfigError, match=message):
        llamafactory.from_column_map(raw, formatting, kind)


def test_column_map_picks_sharegpt_when_it_names_messages():
    attr = llamafactory.from_column_map('{"columns": {"messages": "turns"}}', None, "sft")
    assert attr.formatting == "sharegpt" and attr.messages == "turns" and attr.role_tag == "from"


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"d": {"file_name": "a.json"}, "d": {"file_name": "b.json"}}', "key 'd' appears twice in one object"),
        ('{"d": {"file_name": "a.json", "num_samples": NaN}}', "NaN is not a number JSON can hold"),
        ('{"d": ' + "[" * 3000 + "]" * 3000 + "}", "nested deeper than 1024 levels"),
    ],
    ids=["duplicate entry", "NaN", "deep"],
)
def test_dataset_info_that_parsers_read_differently_is_refused_naming_it(tmp_path, text, message):
    (tmp_path / "dataset_info.json").write_text(text)
    with pytest.raises(ConfigError, match=rf"--dataset-info .*dataset_info.json: {message}"):
        llamafactory.load_entry(str(tmp_path / "dataset_info.json"), "d", "sft")


def test_a_column_map_with_a_key_twice_is_refused():
    with pytest.raises(ConfigError, match="--column-map: key 'columns' appears twice in one object"):
        llamafactory.from_column_map('{"columns": {"prompt": "q"}, "columns": {"prompt": "x"}}', None, "sft")
