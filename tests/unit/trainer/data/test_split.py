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
