"""PNG plots of an evaluation, drawn with matplotlib's Agg backend (no display, no pyplot state).

Labels are often Chinese (subtypes, metric names), so a CJK font is used when one is installed
(Noto Sans CJK, Source Han Sans, WenQuanYi, ...). Without one the plots are still written;
such characters show as boxes, and matplotlib's missing-glyph warnings are silenced.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import numpy as np

from kubetune_trainer.eval.stats import Estimate

log = logging.getLogger(__name__)

CJK_FONTS = (
    "Noto Sans CJK SC",
    "Noto Sans SC",
    "Source Han Sans SC",
    "Source Han Sans CN",
    "WenQuanYi Zen Hei",
    "WenQuanYi Micro Hei",
    "Droid Sans Fallback",
    "SimHei",
    "Microsoft YaHei",
    "PingFang SC",
    "AR PL UMing CN",
)


@cache
def font_family() -> tuple[str, ...]:
    from matplotlib import font_manager

    installed = {font.name for font in font_manager.fontManager.ttflist}
    found = tuple(name for name in CJK_FONTS if name in installed)
    if not found:
        log.info("no CJK font installed: Chinese labels in plots show as boxes")
    return (*found, "DejaVu Sans")


@contextmanager
def plot_style():
    import matplotlib

    fonts = {"font.family": "sans-serif", "font.sans-serif": list(font_family())}
    with matplotlib.rc_context(fonts), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*Glyph .* missing from.*")
        yield


def _values_and_errors(estimates: Sequence[Estimate | None]) -> tuple[np.ndarray, np.ndarray]:
    """Bar heights and asymmetric CI error bars; a missing estimate draws as an empty bar."""
    known = [e if e is not None and e.value is not None else None for e in estimates]
    values = np.array([e.value if e else 0.0 for e in known])
    errors = np.array(
        [
            [e.value - e.ci_low if e else 0.0 for e in known],
            [e.ci_high - e.value if e else 0.0 for e in known],
        ]
    )
    return values, np.clip(errors, 0.0, None)


def _draw_bars(
    axes, groups: Sequence[str], labels: Sequence[str], candidates: Sequence[str], estimate_of
) -> None:
    """One group of bars per x position, one bar per candidate, with CI error bars."""
    bar = 0.8 / max(1, len(candidates))
    x = np.arange(len(groups))
    for i, candidate in enumerate(candidates):
        values, errors = _values_and_errors([estimate_of(group, candidate) for group in groups])
        axes.bar(
            x + (i - (len(candidates) - 1) / 2) * bar, values, bar, yerr=errors, capsize=3, label=candidate
        )
    crowded = len(groups) > 4
    axes.set_xticks(x, list(labels), rotation=30 if crowded else 0, ha="right" if crowded else "center")
    axes.legend(fontsize="small")
    axes.grid(axis="y", alpha=0.3)


def _bars(
    path: Path, title: str, groups: Sequence[str], candidates: Sequence[str], estimate_of, ylabel: str
) -> None:
    from matplotlib.figure import Figure

    with plot_style():
        width = 0.9 + len(groups) * (0.45 + 0.28 * len(candidates))
        figure = Figure(figsize=(min(max(width, 6.0), 28.0), 4.8))
        axes = figure.subplots()
        _draw_bars(axes, groups, groups, candidates, estimate_of)
        axes.set_ylabel(ylabel)
        axes.set_title(title)
        axes.set_ylim(0, 1.05)
        figure.tight_layout()
        figure.savefig(path, dpi=110)


def plot_overall(
    path: Path,
    columns: Sequence[str],
    candidates: Sequence[str],
    metrics: Mapping[str, Mapping[str, Estimate]],
    confidence: float,
) -> None:
    _bars(
        path,
        f"Metrics with {confidence:.0%} bootstrap CIs",
        columns,
        candidates,
        lambda column, candidate: metrics[candidate].get(column),
        "mean per answer",
    )


def plot_strata(
    path: Path,
    column: str,
    field: str,
    strata: Mapping[str, Mapping[str, Mapping[str, Estimate]]],
    candidates: Sequence[str],
) -> None:
    _bars(
        path,
        f"{column} per {field}",
        list(strata),
        candidates,
        lambda stratum, candidate: strata[stratum][candidate].get(column),
        column,
    )


def plot_repetition(
    path: Path,
    prefix: str,
    candidates: Sequence[str],
    metrics: Mapping[str, Mapping[str, Estimate]],
    rates: Mapping[str, np.ndarray],
) -> None:
    """Left: repetition rates with CIs; right: how each candidate's per-answer rates spread."""
    from matplotlib.figure import Figure

    columns = [f"{prefix}.ngram_rate", f"{prefix}.repeater_rate", f"{prefix}.no_eos_rate"]
    with plot_style():
        figure = Figure(figsize=(max(9.0, 2.5 + 1.6 * len(candidates)), 4.6))
        left, right = figure.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
        labels = ["repeated n-grams", "repeater answers", "no end-of-sequence"]
        _draw_bars(
            left, columns, labels, candidates, lambda column, candidate: metrics[candidate].get(column)
        )
        left.set_ylim(0, 1.05)
        left.set_title("Repetition (lower is better)")
        right.boxplot([rates[c][~np.isnan(rates[c])] for c in candidates], tick_labels=list(candidates))
        right.set_ylim(-0.05, 1.05)
        right.set_title("Repeated n-gram rate per answer")
        right.tick_params(axis="x", labelrotation=30)
        figure.tight_layout()
        figure.savefig(path, dpi=110)
