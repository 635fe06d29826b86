"""Per-answer metrics: pure functions of an answer, its reference and how generation ended.

Each metric gives one number per answer (NaN where an answer cannot be scored, e.g. a
reference without a judgement); averages and confidence intervals come from `stats`.

Repetition works on *units* so that it means the same for Chinese and English: after NFKC and
case folding, every CJK character (Han, kana, Hangul) is one unit, every run of other letters
and digits is one unit (a word), and whitespace and punctuation only separate units.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence

import numpy as np

from kubetune_trainer.eval.config import (
    ContainsMetric,
    ExactMatchMetric,
    JudgementMetric,
    LengthMetric,
    NormalizedMatchMetric,
    RegexMetric,
    RepetitionMetric,
)
from kubetune_trainer.eval.engines import Generation
from kubetune_trainer.eval.testset import Example

CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af\U00020000-\U0003134f"
UNIT = re.compile(rf"[{CJK}]|[^\W_{CJK}]+")
NAN = math.nan


def normalize(text: str) -> str:
    """NFKC, case-folded, without whitespace, punctuation or control characters."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return "".join(ch for ch in folded if unicodedata.category(ch)[0] not in "PZC")


def exact_match(answer: str, reference: str) -> float:
    return float(answer.strip() == reference.strip())


def normalized_match(answer: str, reference: str) -> float:
    return float(normalize(answer) == normalize(reference))


def contains(answer: str, reference: str) -> float:
    """1 when the normalized reference occurs in the normalized answer; NaN for an empty reference."""
    needle = normalize(reference)
    if not needle:
        return NAN
    return float(needle in normalize(answer))


def regex_match(answer: str, pattern: re.Pattern) -> float:
    return float(pattern.search(answer) is not None)


def capture(text: str, pattern: re.Pattern) -> str | None:
    """The pattern's capture group (or whole match) in `text`, NFKC and stripped; None when there is none.

    The pattern is tried on the text as written, then on its NFKC form, so that `判断:` also finds
    the full-width `判断：` models often write. A group that captured nothing is no judgement.
    """
    for form in (text, unicodedata.normalize("NFKC", text)):
        match = pattern.search(form)
        if match is not None:
            value = (match.group(1) if pattern.groups else match.group(0)) or ""
            return unicodedata.normalize("NFKC", value).strip() or None
    return None


def judgement_correct(answer: str, reference: str, pattern: re.Pattern) -> float:
    """1 when the answer's judgement equals the reference's; NaN when the reference holds none."""
    expected = capture(reference, pattern)
    if expected is None:
        return NAN
    return float(capture(answer, pattern) == expected)


def units(text: str) -> list[str]:
    return UNIT.findall(unicodedata.normalize("NFKC", text).casefold())


def repeated_ngram_rate(sequence: Sequence[str], n: int) -> float:
    """Share of the sequence's n-grams that repeat an earlier one: 1 - distinct / total (0 if none)."""
    total = len(sequence) - n + 1
    if total <= 0:
        return 0.0
    distinct = {tuple(sequence[i : i + n]) for i in range(total)}
    return 1.0 - len(distinct) / total


def longest_repeated_span(sequence: Sequence[str]) -> int:
    """Length of the longest run of units that occurs at least twice (occurrences may overlap).

    A suffix automaton gives this in linear time: a state whose end positions number two or
    more stands for substrings that repeat, the longest of which has the state's length.
    """
    length, link, moves, count = [0], [-1], [{}], [0]
    last = 0
    for unit in sequence:
        current = len(length)
        length.append(length[last] + 1)
        link.append(-1)
        moves.append({})
        count.append(1)
        state = last
        while state != -1 and unit not in moves[state]:
            moves[state][unit] = current
            state = link[state]
        if state == -1:
            link[current] = 0
        else:
            target = moves[state][unit]
            if length[state] + 1 == length[target]:
                link[current] = target
            else:
                clone = len(length)
                length.append(length[state] + 1)
                link.append(link[target])
                moves.append(dict(moves[target]))
                count.append(0)
                while state != -1 and moves[state].get(unit) == target:
                    moves[state][unit] = clone
                    state = link[state]
                link[target] = link[current] = clone
        last = current
    for state in sorted(range(1, len(length)), key=length.__getitem__, reverse=True):
        count[link[state]] += count[state]
    return max((length[s] for s in range(1, len(length)) if count[s] >= 2), default=0)


def _per_answer(values: list[float]) -> np.ndarray:
    return np.asarray(values, dtype=float)


def score_metric(
    metric, examples: Sequence[Example], generations: Sequence[Generation]
) -> dict[str, np.ndarray]:
    """Every column of one (non-rubric) metric for one candidate's answers."""
    pairs = list(zip((g.text for g in generations), (e.reference for e in examples), strict=True))
    key = metric.key
    if isinstance(metric, ExactMatchMetric):
        return {key: _per_answer([exact_match(a, r) for a, r in pairs])}
    if isinstance(metric, NormalizedMatchMetric):
        return {key: _per_answer([normalized_match(a, r) for a, r in pairs])}
    if isinstance(metric, ContainsMetric):
        return {key: _per_answer([contains(a, r) for a, r in pairs])}
    if isinstance(metric, RegexMetric):
        pattern = re.compile(metric.pattern)
        return {key: _per_answer([regex_match(a, pattern) for a, _ in pairs])}
    if isinstance(metric, JudgementMetric):
        pattern = re.compile(metric.pattern)
        return {key: _per_answer([judgement_correct(a, r, pattern) for a, r in pairs])}
    if isinstance(metric, RepetitionMetric):
        unit_lists = [units(g.text) for g in generations]
        rates = _per_answer([repeated_ngram_rate(u, metric.n) for u in unit_lists])
        return {
            f"{key}.ngram_rate": rates,
            f"{key}.longest_span": _per_answer([longest_repeated_span(u) for u in unit_lists]),
            f"{key}.no_eos_rate": _per_answer([float(not g.finished_by_eos) for g in generations]),
            f"{key}.repeater_rate": (rates >= metric.threshold).astype(float),
        }
    if isinstance(metric, LengthMetric):
        return {
            f"{key}.tokens": _per_answer([g.new_tokens for g in generations]),
            f"{key}.chars": _per_answer([len(g.text) for g in generations]),
        }
    raise TypeError(f"score_metric does not score {type(metric).__name__}")
