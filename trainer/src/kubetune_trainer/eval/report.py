"""The evaluation report: predictions, side-by-side tables, summary, plots and one HTML page.

Files (docs/contracts.md §6), written to a local directory and then uploaded with
`manifest.json` last:

    predictions.jsonl  one line per (candidate, prompt): label/predict + prompt, candidate, metadata
    results.csv        one row per prompt, candidates side by side (UTF-8 with BOM, for Excel)
    results.xlsx       the same, plus sheets of metrics with CIs, deltas, strata, gates, candidates
    summary.json       everything the HTML shows, machine-readable
    plots/*.png        per-stratum accuracy, overall metrics with CIs, repetition
    report.html        self-contained: plots inlined as base64
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from kubetune_trainer import storage
from kubetune_trainer.eval import plots, regressions
from kubetune_trainer.eval.result import EvalResult

# Excel refuses longer cells.
XLSX_CELL_LIMIT = 32767
# Prompts in the HTML page's answers table, and rows per "got worse" table; the CSV/XLSX hold them all.
ANSWER_ROWS = 500
WORSE_ROWS = 100
# Score columns shown per answer when no gate says which matter.
MAX_KEY_COLUMNS = 4


def _number(value: float | None) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


def _prompt_text(messages: list[dict[str, str]]) -> str:
    if len(messages) == 1:
        return messages[0]["content"]
    return "\n".join(f"[{m['role']}] {m['content']}" for m in messages)


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "metric"


def prediction_rows(result: EvalResult) -> list[dict[str, Any]]:
    rows = []
    for name in result.names:
        for example, generation in zip(result.examples, result.generations[name], strict=True):
            row = {
                "candidate": name,
                "index": example.index,
                "prompt": example.prompt,
                "label": example.reference,
                "predict": generation.text,
                "finished_by_eos": generation.finished_by_eos,
                "new_tokens": generation.new_tokens,
                "metadata": example.metadata,
                "scores": {c: _number(result.scores[c][name][example.index]) for c in result.columns},
            }
            verdicts = {
                column: outputs[name][example.index]
                for column, outputs in result.judge_outputs.items()
                if outputs[name][example.index] is not None
            }
            if verdicts:
                row["judge"] = verdicts
            rows.append(row)
    return rows


def side_by_side(result: EvalResult):
    """One row per prompt; per candidate its answer, whether it ended at EOS, and its scores."""
    import pandas as pd

    table: dict[str, list[Any]] = {
        "index": [e.index for e in result.examples],
        "source": [e.source for e in result.examples],
    }
    if result.strata:
        table[str(result.config.stratify_by)] = [result.stratum_of(e) for e in result.examples]
    table["prompt"] = [_prompt_text(e.prompt) for e in result.examples]
    table["label"] = [e.reference for e in result.examples]
    for name in result.names:
        table[f"{name}.predict"] = [g.text for g in result.generations[name]]
        table[f"{name}.finished_by_eos"] = [g.finished_by_eos for g in result.generations[name]]
    for column in result.columns:
        for name in result.names:
            table[f"{name}.{column}"] = [_number(v) for v in result.scores[column][name]]
    return pd.DataFrame(table)


def metric_rows(result: EvalResult) -> list[dict[str, Any]]:
    rows = []
    for name in result.names:
        for column in result.columns:
            estimate = result.metrics[name][column]
            delta = result.deltas.get(name, {}).get(column)
            rows.append(
                {
                    "candidate": name,
                    "metric": column,
                    "value": estimate.value,
                    "ci_low": estimate.ci_low,
                    "ci_high": estimate.ci_high,
                    "n": estimate.n,
                    "delta": delta.value if delta else None,
                    "delta_ci_low": delta.ci_low if delta else None,
                    "delta_ci_high": delta.ci_high if delta else None,
                }
            )
    return rows


def stratum_rows(result: EvalResult) -> list[dict[str, Any]]:
    return [
        {"stratum": stratum, "candidate": name, "metric": column, **estimate.to_json()}
        for stratum, per_candidate in result.strata.items()
        for name, per_column in per_candidate.items()
        for column, estimate in per_column.items()
    ]


def candidate_rows(result: EvalResult) -> list[dict[str, Any]]:
    return [
        {
            "name": c.name,
            "baseline": c.baseline,
            "kind": c.kind,
            "runs_on": c.base.describe(),
            "adapter": c.adapter,
            "verified": c.verified,
            "warnings": "; ".join(c.warnings),
        }
        for c in result.candidates
    ]


def _excel_text(value: Any) -> Any:
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    if isinstance(value, str):
        # Model output can hold control characters that the XLSX format cannot store.
        return ILLEGAL_CHARACTERS_RE.sub("\ufffd", value)[:XLSX_CELL_LIMIT]
    return value


def write_xlsx(path: Path, result: EvalResult, table) -> None:
    import pandas as pd

    sheets = {
        "side_by_side": table,
        "metrics": pd.DataFrame(metric_rows(result)),
        "per_stratum": pd.DataFrame(stratum_rows(result)),
        "gates": pd.DataFrame(
            result.gates,
            columns=["name", "candidate", "metric", "value", "comparator", "threshold", "passed"],
        ),
        "candidates": pd.DataFrame(candidate_rows(result)),
    }
    with pd.ExcelWriter(path, engine="openpyxl") as writer:
        for sheet, frame in sheets.items():
            frame.map(_excel_text).to_excel(writer, sheet_name=sheet, index=False)
            _formulas_as_text(writer.sheets[sheet])


def _formulas_as_text(sheet) -> None:
    """openpyxl stores every string that starts with "=" as a formula; prompts and answers are text.

    Otherwise an answer like `==== 分析 ====` makes Excel repair the file, and one like
    `=HYPERLINK(...)` runs as a formula when the workbook is opened. Text a spreadsheet would take
    for a formula (OWASP's list) also gets Excel's quote prefix, so it stays text when edited; the
    text itself is kept exact.
    """
    for row in sheet.iter_rows():
        for cell in row:
            if cell.data_type == "f":
                cell.data_type = "s"
            if cell.data_type == "s" and isinstance(cell.value, str) and cell.value.startswith(FORMULA_STARTS):
                cell.quotePrefix = True


# What makes a spreadsheet read a cell as a formula (OWASP, CSV injection): test data and model
# answers are text, never formulas.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def formula_safe(value: Any) -> Any:
    """A CSV cell as OWASP advises: text a spreadsheet would take for a formula gets a leading '."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def write_csv(path: Path, table) -> None:
    """UTF-8 with a byte-order mark, for Excel; no cell, header included, is read as a formula.
    Every text cell is quoted: pandas leaves one holding a bare carriage return unquoted, which
    splits its row for every reader."""
    import csv

    table.map(formula_safe).rename(columns=formula_safe).to_csv(
        path, index=False, encoding="utf-8-sig", quoting=csv.QUOTE_NONNUMERIC
    )


def gate_marks(result: EvalResult) -> list[plots.GateMark]:
    """Every gate result as a line at its threshold over the bar it tests: for a gate on the delta,
    the baseline's value plus the threshold."""
    marks = []
    for gate in result.gates:
        column = result.config.column_of(gate["metric"])
        if column is None:
            continue
        level = gate["threshold"]
        if gate.get("relativeToBaseline"):
            base = result.metrics[result.baseline].get(column)
            if base is None or base.value is None:
                continue
            level = base.value + gate["threshold"]
        marks.append(plots.GateMark(column, gate["candidate"], level, bool(gate["passed"]),
                                    bool(gate.get("relativeToBaseline"))))
    return marks


def gate_views(result: EvalResult) -> list[plots.GateView]:
    views = []
    for gate in result.gates:
        column = result.config.column_of(gate["metric"])
        table = result.deltas if gate.get("relativeToBaseline") else result.metrics
        estimate = table.get(gate["candidate"], {}).get(column) if column else None
        views.append(plots.GateView(gate["name"], estimate, gate["value"], gate["threshold"], gate["comparator"],
                                    bool(gate["passed"])))
    return views


def write_plots(directory: Path, result: EvalResult) -> list[tuple[str, str]]:
    """(title, relative path) of every plot written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    marks = gate_marks(result)
    if result.gates:
        plots.plot_gates(directory / "gates.png", gate_views(result), result.config.confidence)
        written.append(("Gates: the value each gate tests against its threshold", "plots/gates.png"))
    bounded = [c for c, column in result.columns.items() if column.bounded]
    if bounded:
        plots.plot_overall(
            directory / "overall_metrics.png", bounded, result.names, result.metrics, result.config.confidence,
            marks,
        )
        written.append(("Overall metrics", "plots/overall_metrics.png"))
    field = str(result.config.stratify_by)
    for metric in result.config.metrics:
        headline = metric.headline()
        if result.strata and result.columns[headline].bounded:
            filename = f"per_{_safe_name(field)}_{_safe_name(headline)}.png"
            # Absolute gates only: a gate on the delta compares with the baseline's overall mean.
            absolute = [m for m in marks if m.column == headline and not m.relative]
            plots.plot_strata(directory / filename, headline, field, result.strata, result.names, absolute)
            written.append((f"{headline} per {field}", f"plots/{filename}"))
        if metric.type == "repetition":
            filename = f"repetition_{_safe_name(metric.key)}.png"
            rates = result.scores[f"{metric.key}.ngram_rate"]
            plots.plot_repetition(directory / filename, metric.key, result.names, result.metrics, rates, marks)
            written.append((f"Repetition ({metric.key})", f"plots/{filename}"))
    return written


def regression_counts(result: EvalResult) -> dict[str, dict[str, dict[str, int]]]:
    counts: dict[str, dict[str, dict[str, int]]] = {}
    for found in regressions.regressions(result, key_columns(result)):
        counts.setdefault(found.candidate, {})[found.column] = {"worse": len(found.rows), "compared": found.compared}
    return counts


def summary(result: EvalResult, output: str) -> dict[str, Any]:
    config = result.config
    return {
        "kind": "eval",
        "output": output,
        "report": storage.join(output, "report.html"),
        "passed": result.passed,
        "baseline": result.baseline,
        "gates": result.gates,
        "metrics": {n: {c: e.to_json() for c, e in m.items()} for n, m in result.metrics.items()},
        "deltas": {n: {c: e.to_json() for c, e in m.items()} for n, m in result.deltas.items()},
        "strata": {
            "field": config.stratify_by if result.strata else None,
            "values": {
                s: {n: {c: e.to_json() for c, e in m.items()} for n, m in per.items()}
                for s, per in result.strata.items()
            },
        },
        "candidates": [c.to_json() for c in result.candidates],
        # Per candidate and gated column: the prompts where it scored worse than the baseline.
        "regressions": regression_counts(result),
        "counts": {"prompts": len(result.examples), "candidates": len(result.candidates)},
        "confidence": config.confidence,
        "bootstrapSamples": config.bootstrap_samples,
        "throughput": result.throughput,
        "timings": result.timings,
        "warnings": result.warnings,
        "config": config.model_dump(mode="json"),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def display_uri(uri: str | None, output: str) -> dict[str, str | None]:
    """How the page shows a URI: a local file as a path relative to the report (a link that works
    wherever the folder is copied), anything else as written; the full URI stays in the tooltip."""
    if not uri:
        return {"text": "–", "href": None, "title": None}
    if uri.startswith("file://") and output.startswith("file://"):
        target = uri[len("file://"):]
        relative = os.path.relpath(target, output[len("file://"):])
        return {"text": relative, "href": urllib.parse.quote(relative), "title": uri}
    return {"text": uri, "href": None, "title": None}


def _score_text(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "–"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def key_columns(result: EvalResult) -> list[str]:
    """The columns the answers table shows per answer: those gates test, else those with a direction."""
    ways = regressions.directions(result)
    return regressions.gated_columns(result) or [c for c in result.columns if ways.get(c)][:MAX_KEY_COLUMNS]


def regression_views(result: EvalResult) -> list[dict[str, Any]]:
    """The "rows where the candidate got worse" tables, one per candidate and gated column."""
    gates_on: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for gate in result.gates:
        gates_on.setdefault((gate["candidate"], result.config.column_of(gate["metric"]) or ""), []).append(gate)
    views = []
    for found in regressions.regressions(result, key_columns(result)):
        base, mine = result.scores[found.column][result.baseline], result.scores[found.column][found.candidate]
        rows = []
        for position, loss in list(zip(found.rows, found.losses, strict=True))[:WORSE_ROWS]:
            example = result.examples[position]
            rows.append({
                "example": example,
                "stratum": result.stratum_of(example),
                "prompt": _prompt_text(example.prompt),
                "baseline_answer": result.generations[result.baseline][position],
                "baseline_score": _score_text(base[position]),
                "answer": result.generations[found.candidate][position],
                "score": _score_text(mine[position]),
                "loss": loss,
            })
        views.append({
            "anchor": f"worse-{_safe_name(found.candidate)}-{_safe_name(found.column)}",
            "candidate": found.candidate,
            "column": found.column,
            "better": "higher" if found.direction > 0 else "lower",
            "gates": gates_on.get((found.candidate, found.column), []),
            "count": len(found.rows),
            "compared": found.compared,
            "share": found.share,
            "rows": rows,
        })
    return views


def answer_rows(result: EvalResult, columns: list[str]) -> list[dict[str, Any]]:
    """The answers table: every answer with its scores on `columns`, and each non-baseline candidate's
    delta against the baseline per column (sortable), for the first ANSWER_ROWS prompts."""
    worse_at: dict[int, set[str]] = {}
    for found in regressions.regressions(result, columns):
        for position in found.rows:
            worse_at.setdefault(position, set()).add(found.candidate)
    others = [n for n in result.names if n != result.baseline]
    rows = []
    for position, example in enumerate(result.examples[:ANSWER_ROWS]):
        answers = []
        for name in result.names:
            scores = [(c, _score_text(result.scores[c][name][position])) for c in columns]
            answers.append({"name": name, "generation": result.generations[name][position], "scores": scores})
        deltas = []
        for name in others:
            for column in columns:
                delta = result.scores[column][name][position] - result.scores[column][result.baseline][position]
                deltas.append(None if math.isnan(delta) else float(delta))
        rows.append({
            "example": example,
            "stratum": result.stratum_of(example),
            "prompt": _prompt_text(example.prompt),
            "answers": answers,
            "deltas": deltas,
            "worse": sorted(worse_at.get(position, ())),
        })
    return rows


REPORT_FILES = ("results.xlsx", "results.csv", "predictions.jsonl", "summary.json")


def render_html(
    result: EvalResult, summary_data: dict[str, Any], plot_files: list[tuple[str, Path]], output: str
) -> str:
    import jinja2
    import markupsafe

    environment = jinja2.Environment(
        # The template ships beside this module (package data "*.j2").
        loader=jinja2.FileSystemLoader(Path(__file__).parent),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    environment.filters["num"] = lambda v, digits=3: "–" if v is None else f"{v:.{digits}f}"
    environment.filters["signed"] = lambda v: "–" if v is None else f"{v:+.3f}"
    environment.filters["uri"] = lambda uri: display_uri(uri, output)
    # Metric columns (repetition.ngram_rate) may wrap after their dots in narrow headings.
    environment.filters["breakable"] = lambda text: markupsafe.Markup("<wbr>").join(
        markupsafe.escape(part) for part in re.split(r"(?<=[._])", str(text))
    )
    images = [
        (title, base64.b64encode(path.read_bytes()).decode("ascii"), f"plots/{path.name}")
        for title, path in plot_files
    ]
    columns = key_columns(result)
    views = regression_views(result)
    by_column = {(v["candidate"], v["column"]): v for v in views}
    gate_views = [by_column.get((g["candidate"], result.config.column_of(g["metric"]))) for g in result.gates]
    others = [n for n in result.names if n != result.baseline]
    return environment.get_template("report.html.j2").render(
        result=result,
        summary=summary_data,
        candidates=result.candidates,
        images=images,
        files=REPORT_FILES,
        key_columns=columns,
        delta_headers=[(name, column) for name in others for column in columns],
        regressions=views,
        gates=list(zip(result.gates, gate_views, strict=True)),
        rows=answer_rows(result, columns),
        strata_values=list(result.strata),
        hidden_rows=max(0, len(result.examples) - ANSWER_ROWS),
        worse_rows_limit=WORSE_ROWS,
    )


def write_report(result: EvalResult, directory: Path, output: str) -> dict[str, Any]:
    """Write every report file into `directory`, manifest last; returns the summary."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "predictions.jsonl", "w", encoding="utf-8") as handle:
        for row in prediction_rows(result):
            handle.write(json.dumps(row, ensure_ascii=False, default=_json_default) + "\n")
    table = side_by_side(result)
    write_csv(directory / "results.csv", table)
    write_xlsx(directory / "results.xlsx", result, table)
    plot_files = write_plots(directory / "plots", result)
    summary_data = summary(result, output)
    (directory / "summary.json").write_text(
        json.dumps(summary_data, ensure_ascii=False, indent=2, default=_json_default), encoding="utf-8"
    )
    html = render_html(result, summary_data, [(title, directory / rel) for title, rel in plot_files], output)
    (directory / "report.html").write_text(html, encoding="utf-8")
    manifest = {
        "kind": "eval",
        "created": summary_data["created"],
        "files": storage.sha256_tree(directory),
    }
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return summary_data


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)
