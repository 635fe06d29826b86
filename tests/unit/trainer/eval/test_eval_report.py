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
