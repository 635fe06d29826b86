"""The report page explains a failed gate: the rows behind it, thresholds on the plots, per-subtype
scores, relative paths; and it is read as a person reads it, in Debian's Chromium at 1280 pixels.

The Chromium tests save screenshots (under KUBETUNE_SCREENSHOTS when set, else the test's tmp
directory) for a person to look at; they assert what a look would check: nothing spills out of
the window, and the answers table sorts and filters.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from kubetune_trainer.eval import plots, regressions
from kubetune_trainer.eval.report import display_uri, gate_marks, write_report
from tests.unit.trainer.eval.report_fixture import CITIES, MUSEUM_LOSSES, failing_result

CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="needs Debian's chromium to render the report as a person sees it "
    "(apt-get install chromium; `make system-deps` installs it)",
)
WIDTH = 1280
# Chromium draws at most this tall a page in one screenshot.
MAX_SCREENSHOT_HEIGHT = 16000


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    result = failing_result(root)
    output = root / "demo-artifacts" / "default" / "evalruns" / "demo-eval"
    summary = write_report(result, output, f"file://{output}")
    return result, summary, output


def museum_losses(result) -> set[int]:
    return {e.index for e in result.examples if e.metadata.get("subtype") == "museum"
            and CITIES.index(e.prompt[0]["content"].split(" in ")[1].rstrip("?")) < MUSEUM_LOSSES}


def test_the_rows_behind_a_failed_gate_are_found_and_counted(report):
    result, summary, _ = report
    assert [g["name"] for g in summary["gates"] if not g["passed"]] == ["accuracy_holds"]
    found = {(r.candidate, r.column): r for r in regressions.regressions(result, ["contains", "repetition.ngram_rate"])}
    assert set(found["dpo", "contains"].rows) == museum_losses(result)
    assert found["dpo", "contains"].compared == len(result.examples)
    assert found["dpo", "repetition.ngram_rate"].rows == []
    assert summary["regressions"]["dpo"]["contains"] == {"worse": MUSEUM_LOSSES, "compared": len(result.examples)}


def test_directions_come_from_the_gates_then_the_metric_type(report):
    result, _, _ = report
    ways = regressions.directions(result)
    assert (ways["contains"], ways["repetition.ngram_rate"], ways["repetition.repeater_rate"]) == (1, -1, -1)
    assert ways["length.tokens"] == 0


def test_the_page_links_the_failed_gate_to_its_rows_and_shows_per_subtype_scores(report):
    _, _, output = report
    page = (output / "report.html").read_text(encoding="utf-8")
    assert f'href="#worse-dpo-contains">{MUSEUM_LOSSES} prompts where dpo got worse</a>' in page
    assert 'id="worse-dpo-contains"' in page
    for subtype in ("weather", "museum", "天气", "(none)"):
        assert f"<td>{subtype}</td>" in page
    assert (output / "plots" / "per_subtype_contains.png").exists()
    assert (output / "plots" / "per_subtype_repetition.ngram_rate.png").exists()
    assert (output / "plots" / "gates.png").exists()
    # Nothing outside the page: no script, style, font or image is fetched.
    assert not re.search(r'(src|href)="(https?:)?//', page)


def test_local_paths_are_relative_to_the_report_and_full_uris_only_in_tooltips(report):
    _, _, output = report
    page = (output / "report.html").read_text(encoding="utf-8")
    assert "<code title=\"file://" in page and ">../../../inputs/test.json</code>" in page
    assert ">../../finetunejobs/demo-sft/final</code>" in page
    shown = re.sub(r'title="[^"]*"', "", page)
    assert "file://" not in shown
    assert display_uri("s3://bucket/a/b", f"file://{output}") == {"text": "s3://bucket/a/b", "href": None, "title": None}


def test_gate_thresholds_are_drawn_over_the_bars_they_test(report):
    result, _, _ = report
    marks = {(m.column, m.candidate): m for m in gate_marks(result)}
    sft_contains = result.metrics["sft"]["contains"].value
    # A gate on the delta is drawn at the baseline's value plus its threshold.
    assert marks["contains", "dpo"].level == pytest.approx(sft_contains) and not marks["contains", "dpo"].passed
    assert marks["repetition.repeater_rate", "dpo"].level == 0.05 and marks["repetition.repeater_rate", "dpo"].passed

    from matplotlib.colors import to_hex
    from matplotlib.figure import Figure

    axes = Figure().subplots()
    columns = ["exact_match", "contains", "repetition.repeater_rate"]
    plots._draw_bars(axes, columns, columns, result.names, lambda c, n: result.metrics[n].get(c),
                     list(marks.values()))
    # The gate lines are drawn in the pass/fail colours (error bars are black).
    lines = [segment for collection in axes.collections
             if to_hex(collection.get_color()[0]) in (plots.PASS_COLOUR, plots.FAIL_COLOUR)
             for segment in collection.get_segments()]
    levels = sorted(round(float(segment[0][1]), 6) for segment in lines)
    assert levels == sorted([round(sft_contains, 6), 0.05])
    # Each line spans the tested candidate's bar: dpo is the right-hand bar of its group.
    contains_line = next(s for s in lines if s[0][1] == pytest.approx(sft_contains))
    assert 1.0 < np.mean(contains_line[:, 0]) < 1.4


# --- in Chromium ---------------------------------------------------------------------------------

# Appended to a copy of the page: measures the layout, drives the answers table as a person would,
# and leaves what it found in an attribute that --dump-dom prints.
PROBE = """<script>
(function () {
  var root = document.documentElement, found = {};
  found.width = root.clientWidth;
  found.scrollWidth = root.scrollWidth;
  found.height = root.scrollHeight;
  found.spilling = Array.prototype.filter.call(document.querySelectorAll("body *"), function (e) {
    return e.getBoundingClientRect().right > root.clientWidth + 1 && !e.closest(".scroll");
  }).map(function (e) { return e.tagName; }).slice(0, 10);
  found.scrolling = Array.prototype.filter.call(document.querySelectorAll(".scroll"), function (e) {
    return e.scrollWidth > e.clientWidth + 1;
  }).map(function (e) { return e.firstElementChild.id || e.previousElementSibling.textContent.trim(); });
  var table = document.getElementById("answers-table"), rows = function () {
    return Array.prototype.filter.call(table.tBodies[0].rows, function (r) { return !r.hidden; });
  };
  var heading = Array.prototype.find.call(table.tHead.rows[0].cells, function (c) {
    return c.textContent.indexOf("Δ contains") === 0;
  });
  heading.click();
  found.sortedFirst = rows().slice(0, 3).map(function (r) { return Number(r.cells[0].textContent); });
  heading.click();
  found.sortedLast = rows().slice(-3).map(function (r) { return Number(r.cells[0].textContent); });
  var worse = document.getElementById("answers-worse");
  worse.value = "dpo";
  worse.dispatchEvent(new Event("input"));
  found.worseRows = rows().map(function (r) { return Number(r.cells[0].textContent); });
  found.count = document.getElementById("answers-count").textContent;
  worse.value = "";
  var text = document.getElementById("answers-filter");
  text.value = "天气";
  text.dispatchEvent(new Event("input"));
  found.textRows = rows().length;
  document.body.setAttribute("data-probe", JSON.stringify(found));
})();
</script>
"""


def chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium that reaches nothing outside the page, with a fresh profile each time."""
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
         f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=180, check=False,
    )


def probe(page: Path, tmp_path: Path) -> dict:
    probed = page.with_name("probe.html")
    probed.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    done = chromium(tmp_path / "profile-probe", f"--window-size={WIDTH},900", "--dump-dom", probed.as_uri())
    match = re.search(r'data-probe="([^"]*)"', done.stdout)
    assert match, f"chromium printed no probe result: {done.stderr[-2000:]}"
    return json.loads(html.unescape(match.group(1)))


def png_size(path: Path) -> tuple[int, int]:
    return struct.unpack(">II", path.read_bytes()[16:24])


def screenshot_dir(tmp_path: Path) -> Path:
    directory = Path(os.environ.get("KUBETUNE_SCREENSHOTS") or tmp_path)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@needs_chromium
def test_the_page_fits_1280_pixels_and_its_answers_table_sorts_and_filters(report, tmp_path):
    result, _, output = report
    found = probe(output / "report.html", tmp_path)
    assert found["scrollWidth"] <= found["width"], found
    assert found["spilling"] == [] and found["scrolling"] == [], found
    losses = museum_losses(result)
    # Sorted by the candidate's change on `contains`: the prompts it lost come first, then last.
    assert set(found["sortedFirst"]) <= losses and set(found["sortedLast"]) <= losses, found
    assert set(found["worseRows"]) == losses and found["count"] == f"{len(losses)} of {len(result.examples)} rows"
    assert found["textRows"] == 1

    shot = screenshot_dir(tmp_path) / "report.png"
    height = min(found["height"], MAX_SCREENSHOT_HEIGHT)
    done = chromium(tmp_path / "profile-shot", f"--window-size={WIDTH},{height}", f"--screenshot={shot}",
                    (output / "report.html").as_uri())
    assert shot.exists(), done.stderr[-2000:]
    assert png_size(shot) == (WIDTH, height)
    print(f"screenshot: {shot}")
