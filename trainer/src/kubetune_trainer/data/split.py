"""A deterministic, stratified train/test split that never separates rows sharing a prompt.

Each row carries a score: a seeded 64-bit hash of its prompt, so that rows with the same prompt
share it (and duplicates, when kept, land together). Within every stratum the rows with the lowest
scores go to test until the stratum's quota is met: round(n * fraction), but at least one row of a
stratum with two or more and at least one left for train. A prompt chosen for test takes all of
its rows along, in whatever stratum they are, so where prompts recur across strata a choice is
skipped when it would leave a stratum of two or more prompts without train rows (see choose_test).
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections import defaultdict

import numpy as np


def seed_key(seed: int) -> bytes:
    return seed.to_bytes(8, "little")


def score(prompt: bytes, key: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(prompt, digest_size=8, key=key).digest(), "little")


def quota(rows: int, fraction: float) -> int:
    """How many rows of a stratum go to test."""
    if fraction <= 0.0:
        return 0
    if fraction >= 1.0:
        return rows
    wanted = math.floor(rows * fraction + 0.5)
    return min(max(wanted, 1), rows - 1) if rows >= 2 else wanted


def _pairs(scores: np.ndarray, strata: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every distinct (prompt, stratum) pair with its rows, sorted by prompt then stratum."""
    order = np.lexsort((strata, scores))
    by_score, by_stratum = scores[order], strata[order]
    starts = np.flatnonzero(
        np.concatenate(([True], (by_score[1:] != by_score[:-1]) | (by_stratum[1:] != by_stratum[:-1])))
    )
    return by_score[starts], by_stratum[starts], np.diff(np.append(starts, len(order)))


def _shared_groups(scores: np.ndarray, strata: np.ndarray) -> dict[int, dict[int, int]]:
    """For prompts that occur in more than one stratum: rows per stratum. One sort, so that a dataset
    where most prompts recur across strata costs n log n, not a scan of all rows per prompt."""
    if len(scores) == 0:
        return {}
    pair_scores, pair_strata, pair_rows = _pairs(scores, strata)
    recurs = pair_scores[1:] == pair_scores[:-1]
    shared_pair = np.concatenate((recurs, [False])) | np.concatenate(([False], recurs))
    shared: dict[int, dict[int, int]] = {}
    for value, stratum, rows in zip(
        pair_scores[shared_pair].tolist(),
        pair_strata[shared_pair].tolist(),
        pair_rows[shared_pair].tolist(),
        strict=True,
    ):
        shared.setdefault(value, {})[stratum] = rows
    return shared


def _prompts_per_stratum(scores: np.ndarray, strata: np.ndarray) -> dict[int, int]:
    if len(scores) == 0:
        return {}
    pair_strata = _pairs(scores, strata)[1]
    ids, counts = np.unique(pair_strata, return_counts=True)
    return dict(zip(ids.tolist(), counts.tolist(), strict=True))


def choose_test(scores: np.ndarray, strata: np.ndarray, fraction: float) -> np.ndarray:
    """A boolean mask: which rows go to test.

    A prompt is not chosen when it would take the last train prompt of a stratum with two or more
    prompts (the one being filled included). Only a stratum of two or more rows that would
    otherwise get no test row at all overrides that: the stratum that loses its last train prompt
    gets one of its own test prompts back into train where it has one that no other stratum shares;
    where it has none it is left without train rows (`strata_without_train` names it).
    """
    if len(scores) == 0 or fraction <= 0.0:
        return np.zeros(len(scores), dtype=bool)
    if fraction >= 1.0:
        return np.ones(len(scores), dtype=bool)
    shared = _shared_groups(scores, strata)
    train_prompts = _prompts_per_stratum(scores, strata)
    several = {stratum for stratum, prompts in train_prompts.items() if prompts >= 2}
    order = np.lexsort((scores, strata))
    sorted_scores, sorted_strata = scores[order].tolist(), strata[order]
    spans = [
        (int(sorted_strata[start]), start, end)
        for start, end in itertools.pairwise([0, *(np.flatnonzero(np.diff(sorted_strata)) + 1).tolist(), len(order)])
    ]
    chosen: set[int] = set()
    test_rows: dict[int, int] = defaultdict(int)
    own_chosen: dict[int, list[tuple[int, int]]] = defaultdict(list)

    def members_of(value: int, stratum: int, rows: int) -> dict[int, int]:
        return shared.get(value) or {stratum: rows}

    def starves(members: dict[int, int]) -> list[int]:
        return [s for s in members if s in several and train_prompts[s] == 1]

    def take(value: int, stratum: int, members: dict[int, int]) -> None:
        chosen.add(value)
        if value not in shared:
            own_chosen[stratum].append((value, members[stratum]))
        for other, rows in members.items():
            train_prompts[other] -= 1
            test_rows[other] += rows

    # A stratum of one prompt and two or more rows has no choice: its prompt goes to test. Taken
    # first, so that the strata sharing that prompt count it and keep another one in train.
    for stratum, start, end in spans:
        if end - start >= 2 and stratum not in several and sorted_scores[start] not in chosen:
            take(sorted_scores[start], stratum, members_of(sorted_scores[start], stratum, end - start))
    for stratum, start, end in spans:
        wanted = quota(end - start, fraction)
        held_back: list[tuple[int, dict[int, int]]] = []
        index = start
        while index < end and test_rows[stratum] < wanted:
            value = sorted_scores[index]
            run = index
            while run < end and sorted_scores[run] == value:
                run += 1
            if value not in chosen:
                members = members_of(value, stratum, run - index)
                if starves(members):
                    held_back.append((value, members))
                else:
                    take(value, stratum, members)
            index = run
        if test_rows[stratum] == 0 and end - start >= 2 and held_back:
            # Every stratum's value in test is the promise of --stratify-by; it outranks another
            # stratum's train rows, but a swap often keeps both.
            value, members = next(
                ((v, m) for v, m in held_back if all(own_chosen[s] for s in starves(m))), held_back[0]
            )
            for other in starves(members):
                if own_chosen[other]:
                    returned, rows = own_chosen[other].pop()
                    chosen.discard(returned)
                    train_prompts[other] += 1
                    test_rows[other] -= rows
            take(value, stratum, members)
    return np.isin(scores, np.fromiter(chosen, dtype=np.uint64, count=len(chosen)))


def strata_without_train(scores: np.ndarray, strata: np.ndarray, is_test: np.ndarray) -> list[int]:
    """Strata with two or more prompts and not one row in train, by id."""
    prompts = _prompts_per_stratum(scores, strata)
    with_train = set(np.unique(strata[~is_test]).tolist())
    return sorted(s for s, count in prompts.items() if count >= 2 and s not in with_train)
