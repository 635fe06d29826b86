"""LLaMA-Factory v1 data and OpenAI/TRL content parts: text parts flattened, loss_weight kept where it
means something, chosen_messages/rejected_messages as a pair, media refused naming file and line."""

from __future__ import annotations

import pytest

from kubetune_trainer.data import formats
from kubetune_trainer.data.validate import RowError, check_sft

from .conftest import write_jsonl


def test_v1_sft_sample_flattens_parts_and_keeps_answer_weights(prepare, sample_data):
    result = prepare("--source", sample_data / "llamafactory_v1/sft.jsonl", "--kind", "sft")
    assert "LLaMA-Factory v1" in result.manifest["format_evidence"]
    rows = {row["metadata"]["source"].rsplit(":", 1)[1]: row["messages"] for row in result.all_rows()}
    # Two text parts become one string, joined as LLaMA-Factory joins them; weight 1 is the default.
    assert rows["3"] == [{"role": "user", "content": "你是谁？"},
                         {"role": "assistant", "content": "我是 Kube，一个帮你微调模型的助手。"}]
    # Weight 0 masks the wrong answer; prompt turns' weights mean nothing (prompts are never trained).
    assert rows["4"][1] == {"role": "assistant", "content": "The moon is made of cheese.", "loss_weight": 0.0}
    assert "loss_weight" not in rows["4"][0] and "loss_weight" not in rows["4"][3]
    assert rows["5"][1]["loss_weight"] == 2.0


def test_v1_dpo_sample_shares_its_prompt(prepare, sample_data):
    result = prepare("--source", sample_data / "llamafactory_v1/dpo.jsonl", "--kind", "preference")
    assert result.manifest["format"] == "llamafactory-v1"
    row = next(r for r in result.all_rows() if r["metadata"]["source"].endswith(":1"))
    assert row["prompt"] == [
        {"role": "system", "content": "You are a careful translator."},
        {"role": "user", "content": "Translate to English: Guten Morgen"},
    ]
    assert row["chosen"] == [{"role": "assistant", "content": "Good morning"}]
    assert row["rejected"] == [{"role": "assistant", "content": "Good morning morning morning"}]
    chinese = next(r for r in result.all_rows() if "谢谢" in r["prompt"][0]["content"])
    assert chinese["chosen"][0]["content"] == "Thank you."


def test_openai_text_parts_flatten(prepare, sample_data):
    result = prepare("--source", sample_data / "content_parts/openai.jsonl", "--kind", "sft")
    assert "content as typed parts" in result.manifest["format_evidence"]
    rows = [row["messages"] for row in result.all_rows()]
    assert [{"role": "user", "content": "Add 3 and 4. Answer with a number."},
            {"role": "assistant", "content": "7"}] in rows
    assert any(m["content"] == "“你好”是什么意思？" for row in rows for m in row)


@pytest.mark.parametrize(
    ("part", "what"),
    [
        ({"type": "image_url", "value": "data/1.jpg"}, "an image part (image_url)"),
        ({"type": "image_url", "image_url": {"url": "https://x/1.png"}}, "an image part (image_url)"),
        ({"type": "input_audio", "input_audio": {"data": "..."}}, "audio part (input_audio)"),
        ({"type": "video_url", "value": "clip.mp4"}, "a video part (video_url)"),
    ],
)
def test_media_parts_are_refused_naming_file_and_line(prepare, tmp_path, capsys, part, what):
    rows = [{"messages": [{"role": "user", "content": [{"type": "text", "value": "看图说话"}]},
                          {"role": "assistant", "content": [{"type": "text", "value": "好的"}]}]}] * 1
    rows = rows + [{"messages": [{"role": "user", "content": [part, {"type": "text", "value": "这是谁？"}]},
                                 {"role": "assistant", "content": [{"type": "text", "value": "不知道"}]}]}]
    source = write_jsonl(tmp_path / "mm.jsonl", rows)
    result = prepare("--source", source, "--kind", "sft", "--on-bad-rows", "fail")
    assert result.rc == 65
    error = capsys.readouterr().err
    assert f"{source}:2: unsupported_media: messages[0].content[0] is {what}" in error
    assert "images, audio and video are not supported" in error


def test_a_row_whose_every_answer_weighs_nothing_is_dropped():
    with pytest.raises(RowError, match="every assistant turn has loss_weight 0") as caught:
        check_sft([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "loss_weight": 0.0}])
    assert caught.value.reason == "empty_content"


def test_preference_answers_cannot_be_weighted():
    row = {"chosen_messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "loss_weight": 0.5}],
           "rejected_messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "b"}]}
    content, _ = formats.v1_preference(row)
    from kubetune_trainer.data.validate import check_preference

    with pytest.raises(RowError, match=r"chosen\[0\]\.loss_weight is 0.5: preference objectives weigh whole answers"):
        check_preference(content["prompt"], content["chosen"], content["rejected"])


def test_reasoning_and_unknown_parts_name_their_type():
    with pytest.raises(RowError, match=r"m\[0\]\.content\[0\]\.type is 'reasoning'; expected text"):
        formats.messages([{"role": "assistant", "content": [{"type": "reasoning", "value": "hmm"}]}], "m")
