"""Paired bootstrap confidence intervals for metric means and for deltas against the baseline.

"Paired" means every bootstrap replicate resamples the same prompt indices for all candidates,
so a delta's interval reflects how the candidates differ on the same prompts rather than the
spread of prompt difficulty. NaN scores (unscorable answers) are left out of each mean; an
estimate with no scorable answer is None. Percentile intervals; numpy's seeded generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Resample in blocks so that memory stays near this many floats whatever the test set size.
BLOCK_FLOATS = 4_000_000


@dataclass(frozen=True)
class Estimate:
    value: float | None
    ci_low: float | None
    ci_high: float | None
    n: int

    def to_json(self) -> dict[str, float | int | None]:
        return {"value": self.value, "ciLow": self.ci_low, "ciHigh": self.ci_high, "n": self.n}


def _means(values: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Means of `values` (rows: series, columns: prompts) over each row of `indices`, ignoring NaN."""
    picked = values[:, indices]  # series x replicates x prompts
    valid = ~np.isnan(picked)
    counts = valid.sum(axis=2)
    sums = np.where(valid, picked, 0.0).sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def bootstrap(values: np.ndarray, samples: int, confidence: float, seed: int) -> list[Estimate]:
    """Estimates with percentile CIs for each row of `values` (series x prompts), paired across rows."""
    values = np.atleast_2d(np.asarray(values, dtype=float))
    series, prompts = values.shape
    if prompts == 0:
        return [Estimate(None, None, None, 0) for _ in range(series)]
    rng = np.random.default_rng(seed)
    block = max(1, BLOCK_FLOATS // max(1, series * prompts))
    replicates = []
    for start in range(0, samples, block):
        indices = rng.integers(0, prompts, size=(min(block, samples - start), prompts))
        replicates.append(_means(values, indices))
    means = np.concatenate(replicates, axis=1)
    tail = (1.0 - confidence) / 2.0 * 100.0
    estimates = []
    for row, row_means in zip(values, means, strict=True):
        scorable = int((~np.isnan(row)).sum())
        if scorable == 0:
            estimates.append(Estimate(None, None, None, 0))
            continue
        finite = row_means[~np.isnan(row_means)]
        low, high = np.percentile(finite, [tail, 100.0 - tail])
        estimates.append(Estimate(float(np.nanmean(row)), float(low), float(high), scorable))
    return estimates


def compare(
    scores: dict[str, np.ndarray], baseline: str, samples: int, confidence: float, seed: int
) -> tuple[dict[str, Estimate], dict[str, Estimate]]:
    """Per-candidate estimates and, for every other candidate, its delta vs the baseline.

    Candidates and deltas are resampled with the same generator state, hence the same indices.
    """
    names = list(scores)
    others = [n for n in names if n != baseline]
    matrix = np.vstack([scores[n] for n in names] + [scores[n] - scores[baseline] for n in others])
    estimates = bootstrap(matrix, samples, confidence, seed)
    return (
        dict(zip(names, estimates[: len(names)], strict=True)),
        dict(zip(others, estimates[len(names) :], strict=True)),
    )
