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
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from kubetune_trainer import storage
from kubetune_trainer.eval import plots
from kubetune_trainer.eval.result import EvalResult

# Excel refuses longer cells.
XLSX_CELL_LIMIT = 32767
# Prompts shown side by side in the HTML page; the CSV/XLSX hold them all.
HTML_SAMPLE_ROWS = 50
# Metric kinds whose per-stratum score is drawn as an accuracy plot.
ACCURACY_TYPES = ("judgement", "exact_match", "normalized_match", "contains", "regex", "rubric")


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
    """UTF-8 with a byte-order mark, for Excel; no cell, header included, is read as a formula."""
    table.map(formula_safe).rename(columns=formula_safe).to_csv(path, index=False, encoding="utf-8-sig")


def write_plots(directory: Path, result: EvalResult) -> list[tuple[str, str]]:
    """(title, relative path) of every plot written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    bounded = [c for c, column in result.columns.items() if column.bounded]
    if bounded:
        plots.plot_overall(
            directory / "overall_metrics.png", bounded, result.names, result.metrics, result.config.confidence
        )
        written.append(("Overall metrics", "plots/overall_metrics.png"))
    field = str(result.config.stratify_by)
    for metric in result.config.metrics:
        if metric.type in ACCURACY_TYPES and result.strata:
            filename = f"per_{_safe_name(field)}_{_safe_name(metric.key)}.png"
            plots.plot_strata(directory / filename, metric.key, field, result.strata, result.names)
            written.append((f"{metric.key} per {field}", f"plots/{filename}"))
        if metric.type == "repetition":
            filename = f"repetition_{_safe_name(metric.key)}.png"
            rates = result.scores[f"{metric.key}.ngram_rate"]
            plots.plot_repetition(directory / filename, metric.key, result.names, result.metrics, rates)
            written.append((f"Repetition ({metric.key})", f"plots/{filename}"))
    return written


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
        "counts": {"prompts": len(result.examples), "candidates": len(result.candidates)},
        "confidence": config.confidence,
        "bootstrapSamples": config.bootstrap_samples,
        "throughput": result.throughput,
        "timings": result.timings,
        "warnings": result.warnings,
        "config": config.model_dump(mode="json"),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def render_html(result: EvalResult, summary_data: dict[str, Any], plot_files: list[tuple[str, Path]]) -> str:
    import jinja2

    environment = jinja2.Environment(
        # The template ships beside this module (package data "*.j2").
        loader=jinja2.FileSystemLoader(Path(__file__).parent),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    environment.filters["num"] = lambda v, digits=3: "–" if v is None else f"{v:.{digits}f}"
    environment.filters["signed"] = lambda v: "–" if v is None else f"{v:+.3f}"
    images = [(title, base64.b64encode(path.read_bytes()).decode("ascii")) for title, path in plot_files]
    rows = []
    for example in result.examples[:HTML_SAMPLE_ROWS]:
        answers = [(name, result.generations[name][example.index]) for name in result.names]
        rows.append({"example": example, "prompt": _prompt_text(example.prompt), "answers": answers})
    return environment.get_template("report.html.j2").render(
        result=result,
        summary=summary_data,
        candidates=result.candidates,
        images=images,
        rows=rows,
        hidden_rows=max(0, len(result.examples) - HTML_SAMPLE_ROWS),
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
    html = render_html(result, summary_data, [(title, directory / rel) for title, rel in plot_files])
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
