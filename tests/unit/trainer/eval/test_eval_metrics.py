from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from kubetune_trainer.eval.config import JudgementMetric, LengthMetric, RegexMetric, RepetitionMetric
from kubetune_trainer.eval.engines import Generation
from kubetune_trainer.eval.metrics import (
    capture,
    contains,
    exact_match,
    judgement_correct,
    longest_repeated_span,
    normalize,
    normalized_match,
    regex_match,
    repeated_ngram_rate,
    score_metric,
    units,
)
from kubetune_trainer.eval.testset import Example

JUDGEMENT = re.compile(JudgementMetric(type="judgement").pattern)


def test_exact_match_ignores_only_surrounding_whitespace():
    assert exact_match(" 判断:是\n", "判断:是") == 1.0
    assert exact_match("判断: 是", "判断:是") == 0.0


def test_normalized_match_folds_width_case_space_and_punctuation():
    assert normalize("  Ｓｕｎｎｙ in Paris, high of 21C. ") == "sunnyinparishighof21c"
    assert normalized_match("今天北京晴，最高气温25度。", "今天 北京晴 最高气温２５度") == 1.0
    assert normalized_match("Sunny in Paris", "Sunny in Rome") == 0.0


def test_contains_looks_for_the_normalized_reference():
    assert contains("答案：判断：是。原因……", "判断:是") == 1.0
    assert contains("判断:否", "判断:是") == 0.0
    assert math.isnan(contains("anything", " 。 "))


def test_regex_and_capture():
    assert regex_match("order 12345 shipped", re.compile(r"\d{5}")) == 1.0
    assert regex_match("order shipped", re.compile(r"\d{5}")) == 0.0
    assert capture("判断： 否\n原因", JUDGEMENT) == "否"
    assert capture("no judgement here", JUDGEMENT) is None
    assert capture("code 42", re.compile(r"\d+")) == "42"


@pytest.mark.parametrize(
    ("answer", "reference", "expected"),
    [
        ("判断:是\n\n原因：可达", "判断:是\n\n原因：越界访问 的触发路径可达", 1.0),
        ("判断：是", "判断:是", 1.0),
        ("判断:否", "判断:是", 0.0),
        ("我认为这是缺陷", "判断:是", 0.0),
    ],
)
def test_judgement_compares_the_captures(answer, reference, expected):
    assert judgement_correct(answer, reference, JUDGEMENT) == expected


def test_judgement_without_a_reference_judgement_is_not_scored():
    assert math.isnan(judgement_correct("判断:是", "no judgement", JUDGEMENT))


def test_a_half_width_pattern_finds_full_width_judgements():
    # The pattern as users write it (docs, the operator's examples) and answers as models write them.
    half_width = re.compile(r"判断:\s*(是|否)")
    assert judgement_correct("判断：是\n原因：可达", "判断:是", half_width) == 1.0
    assert judgement_correct("判断：否", "判断：是", half_width) == 0.0
    assert capture("ＡＮＳＷＥＲ: YES", re.compile(r"ANSWER:\s*(YES|NO)")) == "YES"


def test_an_empty_capture_is_no_judgement():
    optional = re.compile(r"判断:\s*(是|否|)")
    assert capture("判断: 不确定", optional) is None
    assert math.isnan(judgement_correct("判断:", "判断:", optional))
    assert judgement_correct("判断:", "判断:是", optional) == 0.0


def test_units_are_cjk_characters_and_words():
    assert units("今天北京晴，Sunny in Paris! 21C") == [
        "今",
        "天",
        "北",
        "京",
        "晴",
        "sunny",
        "in",
        "paris",
        "21c",
    ]
    assert units("，。！ ...") == []
    # Rare Han characters (extension B and beyond, common in names) are units of their own too.
    assert units("𠀀𠀁𪚥好") == ["𠀀", "𠀁", "𪚥", "好"]


def test_repeated_ngram_rate_by_hand():
    # 2-grams of a b c a b c: ab bc ca ab bc -> 5 in all, 3 distinct.
    assert repeated_ngram_rate(list("abcabc"), 2) == pytest.approx(1 - 3 / 5)
    assert repeated_ngram_rate(list("abcd"), 2) == 0.0
    assert repeated_ngram_rate(list("abc"), 4) == 0.0
    # The seed-000 repeater: 6 × 今天北京晴 = 30 units, 27 4-grams, 5 distinct.
    repeater = units("今天北京晴，今天北京晴，今天北京晴，今天北京晴，今天北京晴，今天北京晴…")
    assert repeated_ngram_rate(repeater, 4) == pytest.approx(1 - 5 / 27)
    english = units(", ".join(["Sunny in Paris"] * 6))
    assert repeated_ngram_rate(english, 4) == pytest.approx(1 - 3 / 15)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("abcabcabc", 6), ("aaaa", 3), ("banana", 3), ("abcd", 0), ("", 0), ("a", 0), ("abab", 2)],
)
def test_longest_repeated_span_by_hand(text, expected):
    assert longest_repeated_span(list(text)) == expected


def test_longest_repeated_span_matches_brute_force():
    rng = np.random.default_rng(7)
    for _ in range(50):
        sequence = list(rng.choice(list("abc"), size=int(rng.integers(0, 25))))
        brute = max(
            (
                length
                for length in range(1, len(sequence))
                for start in range(len(sequence) - length + 1)
                if any(
                    sequence[start : start + length] == sequence[other : other + length]
                    for other in range(start + 1, len(sequence) - length + 1)
                )
            ),
            default=0,
        )
        assert longest_repeated_span(sequence) == brute


def test_the_shared_rejected_answers_are_repeaters_and_the_chosen_are_not(sample_data):
    rows = json.loads((sample_data / "llamafactory" / "generalized_dpo_preference_dataset.json").read_text())
    for row in rows:
        assert repeated_ngram_rate(units(row["rejected"]), 4) > 0.6, row["rejected"]
        assert repeated_ngram_rate(units(row["chosen"]), 4) == 0.0, row["chosen"]


def answers(*texts: str, eos: bool = True) -> list[Generation]:
    return [Generation(text=t, finished_by_eos=eos, new_tokens=len(t)) for t in texts]


def examples(*references: str) -> list[Example]:
    return [
        Example(index=i, prompt=[{"role": "user", "content": "q"}], reference=r)
        for i, r in enumerate(references)
    ]


def test_repetition_columns_for_one_candidate():
    generations = answers("今天北京晴，" * 6, "Sunny in Paris, high of 21C.") + answers(
        "loop loop loop loop loop", eos=False
    )
    scores = score_metric(
        RepetitionMetric(type="repetition", threshold=0.5), examples("a", "b", "c"), generations
    )
    assert list(scores) == [
        "repetition.ngram_rate",
        "repetition.longest_span",
        "repetition.no_eos_rate",
        "repetition.repeater_rate",
    ]
    np.testing.assert_allclose(scores["repetition.ngram_rate"], [1 - 5 / 27, 0.0, 1 - 1 / 2])
    np.testing.assert_array_equal(scores["repetition.longest_span"], [25, 0, 4])
    np.testing.assert_array_equal(scores["repetition.no_eos_rate"], [0, 0, 1])
    np.testing.assert_array_equal(scores["repetition.repeater_rate"], [1, 0, 1])


def test_length_and_regex_columns():
    generations = [Generation("abc", True, 2), Generation("", False, 7)]
    lengths = score_metric(LengthMetric(type="length", name="len"), examples("x", "y"), generations)
    np.testing.assert_array_equal(lengths["len.tokens"], [2, 7])
    np.testing.assert_array_equal(lengths["len.chars"], [3, 0])
    found = score_metric(
        RegexMetric(type="regex", name="has_b", pattern="b"), examples("x", "y"), generations
    )
    np.testing.assert_array_equal(found["has_b"], [1, 0])
