from __future__ import annotations

import math

import numpy as np
import pytest

from kubetune_trainer.eval.config import JudgeConfig, RubricMetric, RubricRule
from kubetune_trainer.eval.engines import EngineOptions, Generation
from kubetune_trainer.eval.rubric import JudgeScorer, RuleScorer, judge_prompt, parse_judge_score, rule_score
from kubetune_trainer.eval.testset import Example


def example(i: int, reference: str = "ref", **metadata) -> Example:
    return Example(
        index=i, prompt=[{"role": "user", "content": f"q{i}"}], reference=reference, metadata=metadata
    )


def test_an_answer_passes_when_every_rule_holds():
    rules = [RubricRule(pattern="(急诊|立即就医)"), RubricRule(pattern="(确诊|保证)", expect="no_match")]
    assert rule_score("建议立即就医。", rules) == 1.0
    assert rule_score("建议立即就医，保证没事。", rules) == 0.0
    assert rule_score("多喝水。", rules) == 0.0


def test_rule_scorer_leaves_rows_outside_applies_to_unscored():
    metric = RubricMetric(
        type="rubric",
        name="red_flag",
        rules=[RubricRule(pattern="急诊")],
        applies_to={"red_flag": ["yes", "true"]},
    )
    rows = [example(0, red_flag="yes"), example(1, red_flag="no"), example(2), example(3, red_flag=True)]
    answers = {"a": [Generation(t, True, 1) for t in ("去急诊", "去急诊", "去急诊", "休息")]}
    scores = RuleScorer(metric).score(rows, answers)["a"]
    assert scores[0] == 1.0 and math.isnan(scores[1]) and math.isnan(scores[2])
    # Metadata values compare as text, so a JSON `true` matches "true".
    assert scores[3] == 0.0


def test_judge_prompt_fills_placeholders_and_keeps_other_braces():
    row = Example(
        index=0, prompt=[{"role": "system", "content": "s"}, {"role": "user", "content": "u"}], reference="r"
    )
    text = judge_prompt('{"q": "{prompt}"} A={answer} R={reference}', row, "ans")
    assert text == '{"q": "system: s\nuser: u"} A=ans R=r'
    assert judge_prompt("{prompt}|{answer}", example(4), "x") == "q4|x"


def test_judge_prompt_leaves_placeholders_inside_the_filled_in_text_alone():
    row = Example(index=0, prompt=[{"role": "user", "content": "fill in {answer}"}], reference="{prompt}")
    text = judge_prompt("Q={prompt} R={reference} A={answer}", row, "{reference}")
    assert text == "Q=fill in {answer} R={prompt} A={reference}"


@pytest.mark.parametrize(
    ("verdict", "pattern", "max_score", "expected"),
    [
        ("score: 0.8", r"([01](?:\.[0-9]+)?)", 1.0, 0.8),
        ("In 2015 the answer earned 15 points; score 0.7.", JudgeConfig.model_fields["score_pattern"].default, 1.0, 0.7),
        ("score: 1.", JudgeConfig.model_fields["score_pattern"].default, 1.0, 1.0),
        ("分数：7 分", r"(\d+)", 10.0, 0.7),
        ("12/10", r"(\d+)", 10.0, 1.0),
        ("no idea", r"(\d+)", 10.0, math.nan),
    ],
)
def test_parse_judge_score(verdict, pattern, max_score, expected):
    value = parse_judge_score(verdict, pattern, max_score)
    assert (math.isnan(value) and math.isnan(expected)) or value == pytest.approx(expected)


def test_judge_scorer_runs_the_judge_through_the_engine(tiny_model_dir, scripted):
    def judge(prompt: str, adapter, model_path):
        # The judge sees the filled template through the chat template.
        assert "<|im_start|>user\nAnswer: " in prompt and adapter is None
        return ("score 1" if "good" in prompt else "score 0" if "bad" in prompt else "unsure"), True

    factory = scripted(judge)
    engine = factory(str(tiny_model_dir), {}, EngineOptions())
    metric = RubricMetric.model_validate(
        {
            "type": "rubric",
            "name": "pass",
            "judge": {
                "model": "m",
                "prompt_template": "Answer: {answer}\nReference: {reference}",
                "score_pattern": r"score (\d)",
            },
        }
    )
    rows = [example(0), example(1), example(2)]
    answers = {"a": [Generation("good", True, 1), Generation("bad", True, 1), Generation("meh", True, 1)]}
    scorer = JudgeScorer(metric, engine, "m")
    scores = scorer.score(rows, answers)["a"]
    np.testing.assert_array_equal(scores[:2], [1.0, 0.0])
    assert math.isnan(scores[2]) and scorer.unparsed == 1
    assert scorer.outputs["a"] == ["score 1", "score 0", "unsure"]
