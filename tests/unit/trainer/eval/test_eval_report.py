"""Report files written from a hand-made result, for cases the scripted evaluation does not produce."""

from __future__ import annotations

import numpy as np

from kubetune_trainer.artifacts.lineage import TrueBase
from kubetune_trainer.eval.candidates import Candidate
from kubetune_trainer.eval.config import parse_config
from kubetune_trainer.eval.engines import Generation
from kubetune_trainer.eval.report import side_by_side, write_xlsx
from kubetune_trainer.eval.result import EvalResult
from kubetune_trainer.eval.stats import Estimate
from kubetune_trainer.eval.testset import Example


def one_answer_result(prompt: str, reference: str, answer: str) -> EvalResult:
    config = parse_config(
        {
            "output": "file:///unused",
            "test_set": "unused.jsonl",
            "candidates": [{"name": "a", "model": "file:///m"}],
            "metrics": [{"type": "exact_match"}],
        }
    )
    return EvalResult(
        config=config,
        examples=[Example(0, [{"role": "user", "content": prompt}], reference)],
        candidates=[Candidate("a", True, "model", TrueBase("file:///m"))],
        generations={"a": [Generation(answer, True, 3)]},
        columns=config.metric_columns(),
        scores={"exact_match": {"a": np.array([0.0])}},
        metrics={"a": {"exact_match": Estimate(0.0, 0.0, 0.0, 1)}},
        deltas={},
        strata={},
        gates=[],
    )


def test_xlsx_keeps_text_that_starts_with_an_equals_sign_as_text(tmp_path):
    from openpyxl import load_workbook

    result = one_answer_result("=SUM(A1:A9)", "=1+1", "==== 分析 ====")
    write_xlsx(tmp_path / "results.xlsx", result, side_by_side(result))
    sheet = load_workbook(tmp_path / "results.xlsx")["side_by_side"]
    header = [cell.value for cell in sheet[1]]
    cells = {name: cell for name, cell in zip(header, sheet[2], strict=True)}
    for column, text in (("prompt", "=SUM(A1:A9)"), ("label", "=1+1"), ("a.predict", "==== 分析 ====")):
        assert (cells[column].value, cells[column].data_type) == (text, "s")


HOSTILE = ["=HYPERLINK(\"http://x\",\"y\")", "+1+1", "-2+3", "@SUM(A1)", "\t=1", "\r=1", "==== 分析 ===="]


def test_csv_cells_a_spreadsheet_would_run_are_escaped_as_owasp_advises(tmp_path):
    import csv

    from kubetune_trainer.eval.report import write_csv

    result = one_answer_result(HOSTILE[0], HOSTILE[1], HOSTILE[2])
    table = side_by_side(result)
    table["=cmd|' /C calc'!A0"] = HOSTILE[3:4]  # a metadata column named by the data
    table["more"] = ["\t=1"]
    table["answer with line breaks"] = ["a\rb"]  # a carriage return alone
    write_csv(tmp_path / "results.csv", table)
    with open(tmp_path / "results.csv", encoding="utf-8-sig", newline="") as handle:
        header, row = list(csv.reader(handle))
    cells = dict(zip(header, row, strict=True))
    assert "'=cmd|' /C calc'!A0" in header
    assert (cells["prompt"], cells["label"], cells["a.predict"]) == ("'" + HOSTILE[0], "'+1+1", "'-2+3")
    assert cells["'=cmd|' /C calc'!A0"] == "'@SUM(A1)" and cells["more"] == "'\t=1"
    assert cells["a.exact_match"] == "0.0"  # numbers, negative ones too, are numbers
    assert cells["answer with line breaks"] == "a\rb"  # one cell, not a row cut apart


def test_xlsx_text_a_spreadsheet_would_run_keeps_its_text_with_a_quote_prefix(tmp_path):
    from openpyxl import load_workbook

    for text in HOSTILE:
        result = one_answer_result(text, "ok", "fine")
        write_xlsx(tmp_path / "results.xlsx", result, side_by_side(result))
        sheet = load_workbook(tmp_path / "results.xlsx")["side_by_side"]
        header = [cell.value for cell in sheet[1]]
        cell = dict(zip(header, sheet[2], strict=True))["prompt"]
        # XML reads a carriage return back as a line feed: the XLSX format's, not the escape's, doing.
        assert (cell.value, cell.data_type, cell.quotePrefix) == (text.replace("\r", "\n"), "s", True), text
