"""PNG plots of an evaluation, drawn with matplotlib's Agg backend (no display, no pyplot state).

Labels are often Chinese (subtypes, metric names), so a CJK font is used when one is installed
(Noto Sans CJK, Source Han Sans, WenQuanYi, ...). Without one the plots are still written;
such characters show as boxes, and matplotlib's missing-glyph warnings are silenced.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
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


PASS_COLOUR = "#1a7f37"
FAIL_COLOUR = "#cf222e"
# Gate results drawn on the gates plot; the report's table lists them all.
MAX_GATES_PLOTTED = 24


@dataclass(frozen=True)
class GateMark:
    """A gate's threshold drawn over the bar of the value it tests."""

    column: str
    candidate: str
    level: float  # on the bar's scale: the threshold, or the baseline's value plus it for a gate on the delta
    passed: bool
    relative: bool = False  # a gate on the delta against the baseline


@dataclass(frozen=True)
class GateView:
    """One gate result as the gates plot draws it: the tested estimate, its interval, the threshold."""

    name: str
    estimate: Estimate | None
    tested: float | None  # the value compared: the point estimate or an end of the interval
    threshold: float
    comparator: str
    passed: bool


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
    axes,
    groups: Sequence[str],
    labels: Sequence[str],
    candidates: Sequence[str],
    estimate_of,
    marks: Sequence[GateMark] = (),
) -> tuple[list, list[str]]:
    """One group of bars per x position, one bar per candidate, with CI error bars, and each gate's
    threshold as a line across the bar it tests (green: passed, red: failed); returns the legend's
    entries, which the caller places beside the bars (inside, it would hide bars and thresholds)."""
    from matplotlib.lines import Line2D

    bar = 0.8 / max(1, len(candidates))
    x = np.arange(len(groups))
    offset = {candidate: (i - (len(candidates) - 1) / 2) * bar for i, candidate in enumerate(candidates)}
    for candidate in candidates:
        values, errors = _values_and_errors([estimate_of(group, candidate) for group in groups])
        axes.bar(x + offset[candidate], values, bar, yerr=errors, capsize=3, label=candidate)
    drawn = set()
    for mark in marks:
        if mark.column not in groups or mark.candidate not in offset or not math.isfinite(mark.level):
            continue
        centre = x[list(groups).index(mark.column)] + offset[mark.candidate]
        colour = PASS_COLOUR if mark.passed else FAIL_COLOUR
        axes.hlines(mark.level, centre - bar * 0.6, centre + bar * 0.6, colors=colour, linestyles="--", linewidth=2.2)
        drawn.add(mark.passed)
    handles, names = axes.get_legend_handles_labels()
    for passed in sorted(drawn, reverse=True):
        handles.append(Line2D([], [], color=PASS_COLOUR if passed else FAIL_COLOUR, linestyle="--", linewidth=2.2))
        names.append(f"gate threshold ({'passed' if passed else 'failed'})")
    crowded = len(groups) > 4
    axes.set_xticks(x, list(labels), rotation=30 if crowded else 0, ha="right" if crowded else "center")
    axes.grid(axis="y", alpha=0.3)
    return handles, names


def _bars(
    path: Path,
    title: str,
    groups: Sequence[str],
    candidates: Sequence[str],
    estimate_of,
    ylabel: str,
    marks: Sequence[GateMark] = (),
) -> None:
    from matplotlib.figure import Figure

    with plot_style():
        width = 0.9 + len(groups) * (0.45 + 0.28 * len(candidates))
        figure = Figure(figsize=(min(max(width, 6.0), 28.0), 4.8))
        axes = figure.subplots()
        handles, names = _draw_bars(axes, groups, groups, candidates, estimate_of, marks)
        axes.legend(handles, names, fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        axes.set_ylabel(ylabel)
        axes.set_title(title)
        axes.set_ylim(0, 1.05)
        _save(figure, path)


def _save(figure, path: Path) -> None:
    # "tight" takes in legends placed beside the axes, which tight_layout leaves out.
    figure.tight_layout()
    figure.savefig(path, dpi=110, bbox_inches="tight")


def plot_overall(
    path: Path,
    columns: Sequence[str],
    candidates: Sequence[str],
    metrics: Mapping[str, Mapping[str, Estimate]],
    confidence: float,
    marks: Sequence[GateMark] = (),
) -> None:
    _bars(
        path,
        f"Metrics with {confidence:.0%} bootstrap CIs",
        columns,
        candidates,
        lambda column, candidate: metrics[candidate].get(column),
        "mean per answer",
        marks,
    )


def plot_strata(
    path: Path,
    column: str,
    field: str,
    strata: Mapping[str, Mapping[str, Mapping[str, Estimate]]],
    candidates: Sequence[str],
    marks: Sequence[GateMark] = (),
) -> None:
    """Per stratum; an absolute gate on `column` (it tests the overall mean) is drawn over every stratum."""
    groups = list(strata)
    _bars(
        path,
        f"{column} per {field}" + (" (gate lines: thresholds on the overall mean)" if marks else ""),
        groups,
        candidates,
        lambda stratum, candidate: strata[stratum][candidate].get(column),
        column,
        [GateMark(stratum, m.candidate, m.level, m.passed) for m in marks for stratum in groups],
    )


def plot_repetition(
    path: Path,
    prefix: str,
    candidates: Sequence[str],
    metrics: Mapping[str, Mapping[str, Estimate]],
    rates: Mapping[str, np.ndarray],
    marks: Sequence[GateMark] = (),
) -> None:
    """Left: repetition rates with CIs; right: how each candidate's per-answer rates spread."""
    from matplotlib.figure import Figure

    columns = [f"{prefix}.ngram_rate", f"{prefix}.repeater_rate", f"{prefix}.no_eos_rate"]
    with plot_style():
        figure = Figure(figsize=(max(9.0, 2.5 + 1.6 * len(candidates)), 4.6))
        left, right = figure.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
        labels = ["repeated n-grams", "repeater answers", "no end-of-sequence"]
        handles, names = _draw_bars(
            left, columns, labels, candidates, lambda column, candidate: metrics[candidate].get(column), marks
        )
        figure.legend(handles, names, fontsize="small", loc="lower center", bbox_to_anchor=(0.5, 1.0),
                      ncol=min(len(names), 6), frameon=False)
        left.set_ylim(0, 1.05)
        left.set_title("Repetition (lower is better)")
        right.boxplot([rates[c][~np.isnan(rates[c])] for c in candidates], tick_labels=list(candidates))
        right.set_ylim(-0.05, 1.05)
        right.set_title("Repeated n-gram rate per answer")
        right.tick_params(axis="x", labelrotation=30)
        _save(figure, path)


def plot_gates(path: Path, gates: Sequence[GateView], confidence: float) -> None:
    """One row per gate result: the tested estimate with its interval against the threshold, the
    passing side shaded. A gate on the delta shows the delta's interval; a gate on a confidence
    bound marks that end of the interval as the value compared."""
    from matplotlib.figure import Figure

    shown = sorted(gates, key=lambda g: g.passed)[:MAX_GATES_PLOTTED]
    with plot_style():
        figure = Figure(figsize=(9.0, 0.6 + 1.05 * len(shown)))
        rows = figure.subplots(len(shown), 1, squeeze=False)[:, 0]
        for axes, gate in zip(rows, shown, strict=True):
            colour = PASS_COLOUR if gate.passed else FAIL_COLOUR
            estimate = gate.estimate
            points = [gate.threshold]
            if estimate is not None and estimate.value is not None:
                low = estimate.ci_low if estimate.ci_low is not None else estimate.value
                high = estimate.ci_high if estimate.ci_high is not None else estimate.value
                axes.errorbar([estimate.value], [0], xerr=[[estimate.value - low], [high - estimate.value]],
                              fmt="o", color=colour, capsize=4, label=f"value, {confidence:.0%} CI")
                points += [low, high]
            if gate.tested is not None and estimate is not None and gate.tested != estimate.value:
                axes.plot([gate.tested], [0], marker="|", markersize=18, color=colour, label="compared (CI bound)")
            span = (max(points) - min(points)) or max(abs(gate.threshold), 1.0) * 0.1
            left, right = min(points) - span * 0.25, max(points) + span * 0.25
            axes.axvline(gate.threshold, color="#444", linestyle="--", linewidth=1.4)
            if gate.comparator in (">", ">="):
                axes.axvspan(gate.threshold, right, color=PASS_COLOUR, alpha=0.08)
            else:
                axes.axvspan(left, gate.threshold, color=PASS_COLOUR, alpha=0.08)
            axes.set_xlim(left, right)
            axes.set_yticks([])
            verdict = "passed" if gate.passed else "FAILED"
            axes.set_title(f"{gate.name}: {verdict} (needs {gate.comparator} {gate.threshold:g})",
                           fontsize="medium", loc="left", color=colour)
            axes.grid(axis="x", alpha=0.3)
        hidden = len(gates) - len(shown)
        if hidden:
            figure.suptitle(f"{len(shown)} of {len(gates)} gate results (failing first); the table lists all")
        _save(figure, path)
