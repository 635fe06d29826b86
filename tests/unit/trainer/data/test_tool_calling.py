"""Tool-calling SFT data: LLaMA-Factory's tools column with function_call/observation turns, TRL's tools
with tool-role messages, both into OpenAI's shape that chat templates render."""

from __future__ import annotations

import pytest

from kubetune_trainer.data import formats, llamafactory
from kubetune_trainer.data.validate import RowError, check_sft, messages, tools

from .conftest import write_jsonl

WEATHER = {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}


def test_glaive_style_sharegpt_calls_and_results_become_tool_calls_and_tool_messages(prepare, sample_data):
    result = prepare("--source", sample_data / "tools/glaive_toolcall.json", "--kind", "sft")
    rows = {row["metadata"]["source"].rsplit(":", 1)[1]: row for row in result.all_rows()}
    first = rows["2"]
    assert first["messages"][1] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}],
    }
    assert first["messages"][2]["role"] == "tool" and '"sky": "snow"' in first["messages"][2]["content"]
    assert first["tools"][0]["type"] == "function" and first["tools"][0]["function"]["name"] == "get_weather"
    chinese = next(row for row in rows.values() if "SF1234567" in row["messages"][0]["content"])
    assert chinese["messages"][1]["tool_calls"][0]["function"] == {"name": "查询快递", "arguments": {"运单号": "SF1234567"}}
    assert chinese["tools"][0]["function"]["description"] == "按运单号查询快递的当前位置"
    # A conversation that needs no call keeps its tools: the model learns when not to call.
    joke = next(row for row in rows.values() if "penguins" in row["messages"][0]["content"])
    assert [m["role"] for m in joke["messages"]] == ["user", "assistant"] and joke["tools"]


def test_trl_tool_rows_keep_parallel_calls_and_tool_names(prepare, sample_data):
    rows = prepare("--source", sample_data / "tools/trl_tools.jsonl", "--kind", "sft").all_rows()
    parallel = next(row for row in rows if "Turin" in row["messages"][0]["content"])
    assert [m["role"] for m in parallel["messages"]] == ["user", "assistant", "tool", "tool", "assistant"]
    assert len(parallel["messages"][1]["tool_calls"]) == 2
    assert parallel["messages"][2]["name"] == "get_weather"


def test_calls_read_from_every_spelling():
    openai = {"type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}, "id": "call_1"}
    read = messages([{"role": "assistant", "tool_calls": [openai]}], "messages")
    assert read == [{"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "f", "arguments": {"x": 1}}, "id": "call_1"}]}]
    v1 = [{"type": "tool_call", "value": '{"name": "f", "arguments": {"x": 1}}'}]
    assert messages([{"role": "assistant", "content": v1}], "m")[0]["tool_calls"][0]["function"]["arguments"] == {"x": 1}
    assert tools('[{"name": "f"}]', "tools") == [{"type": "function", "function": {"name": "f"}}]
    assert tools("", "tools") == [] and tools(None, "tools") == []


def test_turn_order_with_tools():
    call = {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {"name": "f"}}]}
    user, result, answer = {"role": "user", "content": "q"}, {"role": "tool", "content": "r"}, {"role": "assistant", "content": "a"}
    check_sft([user, call, result, answer])
    check_sft([user, call, result, result, answer])  # parallel calls, one result each
    check_sft([user, call])  # learning to call is learning too
    with pytest.raises(RowError, match="message 2 is assistant, expected tool"):
        check_sft([user, call, answer])
    with pytest.raises(RowError, match="message 1 is tool, expected assistant"):
        check_sft([user, result, answer])


def test_sharegpt_function_turns_take_even_positions_and_observations_odd():
    convert = llamafactory.sharegpt(llamafactory.defaults("sharegpt", "sft"), "sft")
    with pytest.raises(RowError, match=r"conversations\[0\]\.from is function_call, expected human or observation"):
        convert({"conversations": [{"from": "function_call", "value": '{"name": "f", "arguments": {}}'}]})
    with pytest.raises(RowError, match=r"conversations\[1\]\.value is not valid JSON"):
        convert({"conversations": [{"from": "human", "value": "q"}, {"from": "function_call", "value": "f(x)"}]})


def test_tools_are_read_for_sft_only(prepare, tmp_path, capsys):
    with pytest.raises(Exception, match="tool calling is read for --kind sft only"):
        llamafactory.from_column_map('{"columns": {"messages": "conversations", "tools": "tools"}}', None, "preference")
    pair = {"prompt": "q", "chosen": "a", "rejected": "b", "tools": [WEATHER]}
    with pytest.raises(RowError, match="tool calling is read for SFT rows only"):
        formats.v1_preference({"chosen_messages": [], "rejected_messages": [], **pair} | {
            "chosen_messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
            "rejected_messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "b"}]})
    source = write_jsonl(tmp_path / "calls.jsonl", [{
        "prompt": [{"role": "user", "content": "q"}],
        "chosen": [{"role": "assistant", "tool_calls": [{"name": "f", "arguments": {}}]}],
        "rejected": [{"role": "assistant", "content": "no"}]}])
    result = prepare("--source", source, "--kind", "preference", "--max-drop-fraction", "1")
    assert result.rc == 65
    assert "chosen[0] is a tool call: tool calling is read for SFT rows only" in capsys.readouterr().err
