"""Split properties, checked with hypothesis: deterministic, stratified, no prompt on both sides."""

from __future__ import annotations

import json
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from kubetune_trainer.data import split
from kubetune_trainer.data.options import PrepareOptions
from kubetune_trainer.data.prepare import prepare
from kubetune_trainer.progress import ProgressReporter

from .conftest import pref, write_jsonl

fractions = st.floats(min_value=0.0, max_value=1.0)
open_fractions = st.floats(min_value=0.01, max_value=0.99)


@given(st.integers(min_value=0, max_value=10_000), fractions)
def test_quota_keeps_a_row_on_each_side_of_a_stratum_with_two(rows, fraction):
    wanted = split.quota(rows, fraction)
    assert 0 <= wanted <= rows
    if 0.0 < fraction < 1.0 and rows >= 2:
        assert 1 <= wanted <= rows - 1
    if fraction == 0.0:
        assert wanted == 0
    if fraction == 1.0:
        assert wanted == rows


rows_strategy = st.lists(
    st.tuples(st.integers(min_value=0, max_value=40), st.integers(min_value=0, max_value=5)), max_size=200
)


@given(rows_strategy, open_fractions)
def test_choose_test_properties(rows, fraction):
    scores = np.array([s for s, _ in rows], dtype=np.uint64)
    strata = np.array([t for _, t in rows], dtype=np.uint32)
    is_test = split.choose_test(scores, strata, fraction)
    assert np.array_equal(is_test, split.choose_test(scores.copy(), strata.copy(), fraction))
    side = {}
    for value, to_test in zip(scores.tolist(), is_test.tolist(), strict=True):
        assert side.setdefault(value, to_test) == to_test, "rows sharing a prompt were split"
    per_stratum = defaultdict(list)
    for value, stratum, to_test in zip(scores.tolist(), strata.tolist(), is_test.tolist(), strict=True):
        per_stratum[stratum].append((value, to_test))
    strata_of = defaultdict(set)
    for value, stratum in zip(scores.tolist(), strata.tolist(), strict=True):
        strata_of[value].add(stratum)
    for members in per_stratum.values():
        if len(members) >= 2:
            assert any(to_test for _, to_test in members), "a stratum with two rows has none in test"
        values = [v for v, _ in members]
        own = all(len(strata_of[v]) == 1 for v in values)
        if own and len(set(values)) == len(values):
            assert sum(t for _, t in members) == split.quota(len(members), fraction)


def sides(scores: list[int], strata: list[int], fraction: float) -> dict[int, dict[int, bool]]:
    """stratum -> prompt -> in test, checking on the way that no prompt is on both sides."""
    is_test = split.choose_test(np.array(scores, dtype=np.uint64), np.array(strata, dtype=np.uint32), fraction)
    side: dict[int, bool] = {}
    by_stratum: dict[int, dict[int, bool]] = defaultdict(dict)
    for value, stratum, to_test in zip(scores, strata, is_test.tolist(), strict=True):
        assert side.setdefault(value, to_test) == to_test, "rows sharing a prompt were split"
        by_stratum[stratum][value] = to_test
    return dict(by_stratum)


def test_a_prompt_shared_across_strata_does_not_take_a_stratums_last_train_prompt():
    # Stratum 0 sends prompt 1 to test; stratum 1's lowest prompt, 2, is stratum 0's last in train.
    assert sides([1, 2, 2, 3], [0, 0, 1, 1], 0.5) == {0: {1: True, 2: False}, 1: {2: False, 3: True}}


def test_a_stratum_that_needs_the_shared_prompt_in_test_swaps_with_the_one_that_had_it_in_train():
    # Stratum 1 has one prompt, which must go to test; stratum 0 then keeps prompt 1 in train.
    assert sides([1, 2, 2, 2], [0, 0, 1, 1], 0.5) == {0: {1: False, 2: True}, 1: {2: True}}


def test_a_stratum_of_one_prompt_sends_it_to_test_before_the_others_choose():
    # Stratum 0's lowest prompt, 1, would leave it only prompt 3, which stratum 1 must send to test.
    assert sides([3, 1, 3, 3, 3, 1], [0, 0, 1, 1, 1, 2], 0.2) == {0: {1: False, 3: True}, 1: {3: True}, 2: {1: False}}


def test_a_stratum_left_without_train_rows_is_named():
    # Strata 1 and 2 each hold a single prompt that must go to test: both of stratum 0's prompts.
    scores, strata = [1, 2, 1, 1, 2, 2], [0, 0, 1, 1, 2, 2]
    assert sides(scores, strata, 0.5) == {0: {1: True, 2: True}, 1: {1: True}, 2: {2: True}}
    scores_array, strata_array = np.array(scores, dtype=np.uint64), np.array(strata, dtype=np.uint32)
    is_test = split.choose_test(scores_array, strata_array, 0.5)
    assert split.strata_without_train(scores_array, strata_array, is_test) == [0]


@given(rows_strategy, open_fractions)
def test_a_stratum_with_two_prompts_loses_its_train_rows_only_to_another_stratums_test_row(rows, fraction):
    scores = np.array([s for s, _ in rows], dtype=np.uint64)
    strata = np.array([t for _, t in rows], dtype=np.uint32)
    is_test = split.choose_test(scores, strata, fraction)
    prompts, rows_of = defaultdict(set), Counter(strata.tolist())
    for value, stratum in zip(scores.tolist(), strata.tolist(), strict=True):
        prompts[stratum].add(value)
    test_prompts = set(scores[is_test].tolist())
    starved = split.strata_without_train(scores, strata, is_test)
    assert starved == sorted(s for s, own in prompts.items() if len(own) >= 2 and own <= test_prompts)
    for stratum in starved:
        # Only a stratum of two or more rows that had no other way into test takes a last train prompt.
        assert any(
            other != stratum and rows_of[other] >= 2 and own & prompts[stratum] for other, own in prompts.items()
        ), f"stratum {stratum} lost its train rows for nothing"


@given(rows_strategy)
def test_shared_groups_count_the_rows_of_every_prompt_found_in_several_strata(rows):
    scores = np.array([s for s, _ in rows], dtype=np.uint64)
    strata = np.array([t for _, t in rows], dtype=np.uint32)
    per_prompt = defaultdict(Counter)
    for value, stratum in rows:
        per_prompt[value][stratum] += 1
    assert split._shared_groups(scores, strata) == {
        value: dict(counts) for value, counts in per_prompt.items() if len(counts) > 1
    }


@given(rows_strategy)
def test_fraction_zero_and_one(rows):
    scores = np.array([s for s, _ in rows], dtype=np.uint64)
    strata = np.array([t for _, t in rows], dtype=np.uint32)
    assert not split.choose_test(scores, strata, 0.0).any()
    assert split.choose_test(scores, strata, 1.0).all()


def test_scores_depend_on_the_seed_and_the_prompt():
    assert split.score(b"p", split.seed_key(1)) == split.score(b"p", split.seed_key(1))
    assert split.score(b"p", split.seed_key(1)) != split.score(b"p", split.seed_key(2))
    assert split.score(b"p", split.seed_key(1)) != split.score(b"q", split.seed_key(1))


dataset = st.lists(
    st.tuples(st.integers(min_value=0, max_value=30), st.sampled_from("abcd"), st.integers(min_value=0, max_value=3)),
    min_size=1,
    max_size=60,
)


@settings(max_examples=25, deadline=None)
@given(dataset, open_fractions, st.integers(min_value=0, max_value=2**31 - 1), st.booleans())
def test_prepared_splits_are_stratified_disjoint_and_repeatable(rows, fraction, seed, dedupe):
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "rows.jsonl"
        source.write_text("".join(
            json.dumps({
                "prompt": [{"role": "user", "content": f"question {q}"}],
                "chosen": [{"role": "assistant", "content": f"good {v}"}],
                "rejected": [{"role": "assistant", "content": "bad"}],
                "subtype": subtype,
            }) + "\n"
            for q, subtype, v in rows
        ))

        def run(name: str) -> tuple[dict, dict[str, list[dict]]]:
            options = PrepareOptions(
                kind="preference", output=str(Path(tmp) / name), sources=(str(source),), test_fraction=fraction,
                stratify_by="subtype", seed=seed, dedupe=dedupe, max_drop_fraction=1.0,
            )
            manifest = prepare(options, ProgressReporter())
            out = Path(tmp) / name
            return manifest, {
                s: [json.loads(line) for line in (out / f"{s}.jsonl").read_text().splitlines()] for s in ("train", "test")
            }

        manifest, published = run("a")
        again, _ = run("b")
        assert manifest["fingerprint"] == again["fingerprint"]
        prompts = {s: {r["prompt"][0]["content"] for r in published[s]} for s in published}
        assert not prompts["train"] & prompts["test"]
        kept = Counter(r["metadata"]["subtype"] for s in published for r in published[s])
        in_test = Counter(r["metadata"]["subtype"] for r in published["test"])
        for subtype, count in kept.items():
            if count >= 2:
                assert in_test[subtype] >= 1
            assert manifest["strata"][subtype] == {"train": count - in_test[subtype], "test": in_test[subtype]}
        questions = defaultdict(set)
        for r in published["train"] + published["test"]:
            questions[r["metadata"]["subtype"]].add(r["prompt"][0]["content"])
        without_train = sorted(t for t, asked in questions.items() if len(asked) >= 2 and in_test[t] == kept[t])
        assert [w.split("'")[1] for w in manifest["warnings"]] == without_train


def test_prepare_names_a_subtype_it_had_to_leave_without_train_rows(prepare, tmp_path, caplog, capsys):
    # "a" asks two questions; "b" and "c" each ask one of them twice, so both must go to test.
    rows = [
        pref("q1", subtype="a"), pref("q2", subtype="a"),
        pref("q1", "good 1", subtype="b"), pref("q1", "good 2", subtype="b"),
        pref("q2", "good 1", subtype="c"), pref("q2", "good 2", subtype="c"),
    ]
    source = write_jsonl(tmp_path / "rows.jsonl", rows)
    result = prepare("--source", source, "--kind", "preference", "--stratify-by", "subtype", "--test-fraction", "0.5")
    assert result.rc == 0
    assert result.manifest["strata"]["a"] == {"train": 0, "test": 2}
    [warning] = result.manifest["warnings"]
    assert warning.startswith("subtype 'a' has no row in train")
    assert warning in caplog.text
    assert f"warning: {warning}" in capsys.readouterr().out
    assert result.termination["warnings"] == [warning]


def test_prepare_keeps_a_train_row_for_every_subtype_a_swap_can_save(prepare, tmp_path):
    # Whatever the hashes, "b" needs q2 in test and "a" can keep q1 in train.
    rows = [pref("q1", subtype="a"), pref("q2", subtype="a"), pref("q2", "good 1", subtype="b"), pref("q2", "good 2", subtype="b")]
    source = write_jsonl(tmp_path / "rows.jsonl", rows)
    for seed in range(8):
        result = prepare(
            "--source", source, "--kind", "preference", "--stratify-by", "subtype", "--test-fraction", "0.5",
            "--seed", seed,
        )
        assert result.manifest["strata"] == {"a": {"train": 1, "test": 1}, "b": {"train": 0, "test": 2}}
        assert result.manifest["warnings"] == []
