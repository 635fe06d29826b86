"""A deterministic, stratified train/test split that never separates rows sharing a prompt.

Each row carries a score: a seeded 64-bit hash of its prompt, so that rows with the same prompt
share it (and duplicates, when kept, land together). Within every stratum the rows with the lowest
scores go to test until the stratum's quota is met: round(n * fraction), but at least one row of a
stratum with two or more and at least one left for train. A prompt chosen for test takes all of
its rows along, in whatever stratum they are.
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


def _shared_groups(scores: np.ndarray, strata: np.ndarray) -> dict[int, dict[int, int]]:
    """For prompts that occur in more than one stratum: rows per stratum. One sort, so that a dataset
    where most prompts recur across strata costs n log n, not a scan of all rows per prompt."""
    if len(scores) == 0:
        return {}
    order = np.lexsort((strata, scores))
    by_score, by_stratum = scores[order], strata[order]
    starts = np.flatnonzero(
        np.concatenate(([True], (by_score[1:] != by_score[:-1]) | (by_stratum[1:] != by_stratum[:-1])))
    )
    pair_scores, pair_strata = by_score[starts], by_stratum[starts]
    pair_rows = np.diff(np.append(starts, len(order)))
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


def choose_test(scores: np.ndarray, strata: np.ndarray, fraction: float) -> np.ndarray:
    """A boolean mask: which rows go to test."""
    if len(scores) == 0 or fraction <= 0.0:
        return np.zeros(len(scores), dtype=bool)
    if fraction >= 1.0:
        return np.ones(len(scores), dtype=bool)
    shared = _shared_groups(scores, strata)
    order = np.lexsort((scores, strata))
    sorted_scores, sorted_strata = scores[order].tolist(), strata[order]
    bounds = [0, *(np.flatnonzero(np.diff(sorted_strata)) + 1).tolist(), len(order)]
    chosen: set[int] = set()
    taken_elsewhere: dict[int, int] = defaultdict(int)
    for start, end in itertools.pairwise(bounds):
        stratum = int(sorted_strata[start])
        wanted = quota(end - start, fraction)
        taken = taken_elsewhere[stratum]
        index = start
        while index < end and taken < wanted:
            value = sorted_scores[index]
            run = index
            while run < end and sorted_scores[run] == value:
                run += 1
            if value not in chosen:
                chosen.add(value)
                taken += run - index
                for other, rows in shared.get(value, {}).items():
                    if other != stratum:
                        taken_elsewhere[other] += rows
            index = run
    return np.isin(scores, np.fromiter(chosen, dtype=np.uint64, count=len(chosen)))
