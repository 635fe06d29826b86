"""A whole evaluation with scripted answers: one engine per true base, the metrics, gates and report."""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
import re
import shutil

import pytest

from kubetune_trainer.eval.config import parse_config
from kubetune_trainer.eval.runner import run_eval, termination_summary
from kubetune_trainer.progress import TERMINATION_LIMIT, ProgressReporter, metrics

REFERENCE = re.compile(r"判断:(是|否)")


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory, sample_data, lineage_models, scripted):
    """base (baseline) always says 否; sft (adapter) gives the reference; loop repeats itself, never ending.

    A judge model grades answers 1 when they equal the reference, 0 otherwise, and cannot make
    sense of loop's answers.
    """
    tmp_path = tmp_path_factory.mktemp("evaluation")
    answers = {
        json.loads(line)["text"][0]["content"]: json.loads(line)["text"][-1]["content"]
        for line in (sample_data / "defects" / "sft_chat.jsonl").read_text(encoding="utf-8").splitlines()
    }
    loop_model = shutil.copytree(lineage_models.base, tmp_path / "loop-model")
    judge_model = shutil.copytree(lineage_models.base, tmp_path / "judge-model")

    def script(prompt: str, adapter, model_path):
        question = prompt.split("<|im_start|>user\n", 1)[1].split("<|im_end|>", 1)[0]
        if model_path == str(judge_model):
            answer, reference = question.removeprefix("Answer: ").split("\nReference: ")
            return (
                "unsure" if answer.startswith("判断:是 判断:是") else f"score {int(answer == reference)}"
            ), True
        if model_path == str(loop_model):
            return "判断:是 判断:是 " * 20, False
        if adapter == "sft":
            return answers[question], True
        return "判断:否\n\n原因：不可达", True

    factory = scripted(script)
    progress_file = tmp_path / "progress.jsonl"
    config = parse_config(
        {
            "output": f"file://{tmp_path}/report",
            "test_set": str(sample_data / "defects" / "sft_chat.jsonl"),
            "candidates": [
                {"name": "base", "model": str(lineage_models.base), "baseline": True},
                {"name": "sft", "adapter": str(lineage_models.sft)},
                {"name": "loop", "model": str(loop_model)},
            ],
            "metrics": [
                {"name": "judgement", "type": "judgement", "pattern": r"判断:\s*(是|否)"},
                {"name": "exact_match", "type": "exact_match"},
                {"name": "repetition", "type": "repetition"},
                {"name": "length", "type": "length"},
                {
                    "name": "no_overreach",
                    "type": "rubric",
                    "rules": [{"pattern": "(确诊|保证)", "expect": "no_match"}],
                },
                {
                    "name": "judge_pass",
                    "type": "rubric",
                    "judge": {
                        "model": f"file://{judge_model}",
                        "prompt_template": "Answer: {answer}\nReference: {reference}",
                        "score_pattern": r"score ([01])",
                    },
                },
            ],
            "bootstrap_samples": 300,
            "gates": [
                {
                    "name": "judgement_improves",
                    "metric": "judgement",
                    "candidate": "sft",
                    "comparator": ">",
                    "threshold": 0.0,
                    "relative_to_baseline": True,
                    "use_confidence_bound": True,
                },
                {"metric": "repetition.repeater_rate", "comparator": "<=", "threshold": 0.1},
            ],
        }
    )
    summary = run_eval(config, reporter=ProgressReporter(file=str(progress_file)), factory=factory)
    return summary, factory, tmp_path / "report", progress_file


def test_one_engine_per_true_base_serves_its_adapters_and_the_judge_comes_last(evaluation, lineage_models):
    _, factory, report, _ = evaluation
    assert [(e.model_path, e.adapters) for e in factory.opened] == [
        (str(lineage_models.base), {"sft": str(lineage_models.sft)}),
        (str(report.parent / "loop-model"), {}),
        (str(report.parent / "judge-model"), {}),
    ]
    assert all(e.closed for e in factory.opened)
    judge_options = factory.opened[2].options
    assert (judge_options.max_new_tokens, judge_options.temperature, judge_options.beam_width) == (64, 0.0, 1)


def test_a_judge_model_scores_through_the_same_engine_interface(evaluation):
    summary, _, report, _ = evaluation
    assert summary["metrics"]["sft"]["judge_pass"]["value"] == 1.0
    assert summary["metrics"]["base"]["judge_pass"]["value"] == 0.0
    assert summary["metrics"]["loop"]["judge_pass"] == {"value": None, "ciLow": None, "ciHigh": None, "n": 0}
    assert any(
        "judge_pass: the judge's verdict matched no score" in w and "16 answers" in w
        for w in summary["warnings"]
    )
    rows = [
        json.loads(line) for line in (report / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    assert rows[0]["judge"] == {"judge_pass": "score 0"}


def test_metrics_deltas_and_strata(evaluation):
    summary, _, _, _ = evaluation
    m = summary["metrics"]
    # 10 of the 16 references say 是; base always answers 否.
    assert m["base"]["judgement"]["value"] == pytest.approx(6 / 16)
    assert m["sft"]["judgement"]["value"] == 1.0 and m["sft"]["exact_match"]["value"] == 1.0
    assert summary["deltas"]["sft"]["judgement"]["value"] == pytest.approx(10 / 16)
    assert summary["deltas"]["sft"]["judgement"]["ciLow"] > 0
    assert set(summary["deltas"]) == {"sft", "loop"}
    assert summary["strata"]["field"] == "subtype"
    assert set(summary["strata"]["values"]) == {"空指针", "越界访问", "资源泄漏", "除零"}
    assert summary["strata"]["values"]["空指针"]["sft"]["judgement"]["value"] == 1.0
    assert m["base"]["no_overreach"]["value"] == 1.0


def test_the_deliberately_repetitive_candidate_is_caught(evaluation):
    summary, _, _, _ = evaluation
    loop, sft = summary["metrics"]["loop"], summary["metrics"]["sft"]
    assert loop["repetition.ngram_rate"]["value"] > 0.8
    assert loop["repetition.repeater_rate"]["value"] == 1.0
    assert loop["repetition.no_eos_rate"]["value"] == 1.0
    assert loop["repetition.longest_span"]["value"] >= 30
    assert sft["repetition.ngram_rate"]["value"] < 0.2 and sft["repetition.repeater_rate"]["value"] == 0.0
    assert summary["deltas"]["loop"]["repetition.ngram_rate"]["ciLow"] > 0.5


def test_gates_are_evaluated_into_the_result(evaluation):
    summary, _, _, _ = evaluation
    gates = {(g["name"], g["candidate"]): g for g in summary["gates"]}
    assert gates[("judgement_improves", "sft")]["passed"] is True
    assert gates[("judgement_improves", "sft")]["value"] == summary["deltas"]["sft"]["judgement"]["ciLow"]
    assert gates[("sft: repetition.repeater_rate <= 0.1", "sft")]["passed"] is True
    assert gates[("loop: repetition.repeater_rate <= 0.1", "loop")]["passed"] is False
    assert summary["passed"] is False
    message = termination_summary(summary)
    assert message["kind"] == "eval" and message["passed"] is False and len(message["gates"]) == 3
    assert message["gateTally"] == {"passed": 2, "total": 3}
    assert message["gates"][0]["name"] == "loop: repetition.repeater_rate <= 0.1"  # failures first
    assert set(message["gates"][0]) == {
        "name",
        "metric",
        "candidate",
        "value",
        "threshold",
        "comparator",
        "passed",
    }
    assert message["metrics"]["sft"]["judgement"] == {"value": 1.0, "ciLow": 1.0, "ciHigh": 1.0}
    assert "truncated" not in message


def test_a_termination_message_with_too_many_gates_keeps_the_tally_and_the_failures():
    gates = [
        {"name": f"cand{c}: Δmetric_number_{m} (CI bound) >= 0.05", "metric": f"metric_number_{m}",
         "candidate": f"cand{c}", "value": 0.1234567, "threshold": 0.05, "comparator": ">=", "passed": (c, m) != (3, 7)}
        for c in range(8) for m in range(8)
    ]
    estimate = {"value": 0.5, "ciLow": 0.4, "ciHigh": 0.6}
    summary = {"output": "s3://b/e", "report": "s3://b/e/report.html", "passed": False, "gates": gates,
               "metrics": {f"metric_number_{m}": {f"cand{c}": estimate for c in range(8)} for m in range(8)}}
    message = termination_summary(summary)
    assert len(json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()) <= TERMINATION_LIMIT
    assert message["truncated"] is True and "metrics" not in message
    assert message["gateTally"] == {"passed": 63, "total": 64}
    assert 10 < len(message["gates"]) < 64
    assert message["gates"][0]["name"] == "cand3: Δmetric_number_7 (CI bound) >= 0.05"


def test_report_files_and_manifest(evaluation):
    summary, _, report, _ = evaluation
    files = {p.relative_to(report).as_posix() for p in report.rglob("*") if p.is_file()}
    assert {
        "predictions.jsonl",
        "results.csv",
        "results.xlsx",
        "summary.json",
        "report.html",
        "manifest.json",
    } <= files
    manifest = json.loads((report / "manifest.json").read_text())
    assert set(manifest["files"]) == files - {"manifest.json"}
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((report / name).read_bytes()).hexdigest() == digest
    assert json.loads((report / "summary.json").read_text(encoding="utf-8"))["passed"] is False
    assert summary["report"] == f"file://{report}/report.html"


def test_predictions_carry_label_predict_and_context(evaluation):
    _, _, report, _ = evaluation
    rows = [
        json.loads(line) for line in (report / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    assert len(rows) == 3 * 16
    first = rows[0]
    assert first["candidate"] == "base" and first["index"] == 0
    assert first["label"].startswith("判断:否") and first["predict"].startswith("判断:否")
    assert first["prompt"][0]["role"] == "user" and first["metadata"]["subtype"] == "空指针"
    assert first["finished_by_eos"] is True and first["scores"]["judgement"] == 1.0
    assert [r["finished_by_eos"] for r in rows if r["candidate"] == "loop"] == [False] * 16


def test_csv_and_xlsx_put_candidates_side_by_side(evaluation):
    from openpyxl import load_workbook

    _, _, report, _ = evaluation
    # Excel reads a CSV as UTF-8 only when it starts with the byte order mark.
    assert (report / "results.csv").read_bytes().startswith(codecs.BOM_UTF8)
    with open(report / "results.csv", encoding="utf-8-sig", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 16
    assert {
        "prompt",
        "label",
        "subtype",
        "base.predict",
        "sft.predict",
        "loop.predict",
        "sft.judgement",
    } <= set(table[0])
    workbook = load_workbook(report / "results.xlsx", read_only=True)
    assert workbook.sheetnames == ["side_by_side", "metrics", "per_stratum", "gates", "candidates"]
    header = [cell.value for cell in next(workbook["side_by_side"].iter_rows(max_row=1))]
    assert header[: len(list(table[0]))] == list(table[0])
    assert workbook["side_by_side"].max_row == 17
    metric_rows = list(workbook["metrics"].iter_rows(values_only=True))
    assert metric_rows[0][:4] == ("candidate", "metric", "value", "ci_low")


def test_plots_load_and_the_html_is_self_contained(evaluation):
    import matplotlib.image

    _, _, report, _ = evaluation
    pngs = sorted(p.name for p in (report / "plots").glob("*.png"))
    assert pngs == [
        "gates.png",
        "overall_metrics.png",
        "per_subtype_exact_match.png",
        "per_subtype_judge_pass.png",
        "per_subtype_judgement.png",
        "per_subtype_no_overreach.png",
        # Every metric whose headline column lies in [0, 1] is drawn per subtype.
        "per_subtype_repetition.ngram_rate.png",
        "repetition_repetition.png",
    ]
    for png in pngs:
        image = matplotlib.image.imread(report / "plots" / png)
        assert image.shape[0] > 100 and image.shape[1] > 100
    html = (report / "report.html").read_text(encoding="utf-8")
    for name in ("base", "sft", "loop"):
        assert f"<td>{name}" in html
    assert html.count("data:image/png;base64,") == len(pngs)
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert "judgement_improves" in html and "空指针" in html


def test_progress_phases_and_eval_gauges(evaluation):
    _, _, _, progress_file = evaluation
    events = [json.loads(line) for line in progress_file.read_text().splitlines()]
    phases = [e["phase"] for e in events]
    assert phases[0] == "setup" and phases[-1] == "done"
    assert {"generate", "score", "report"} <= set(phases)
    assert any(
        e["phase"] == "generate" and e.get("step") == 48 and e.get("total_steps") == 48 for e in events
    )
    # Counters, for rate(): the process-wide registry holds every evaluation of the session.
    assert metrics().prompts_total._value.get() >= 48
    assert metrics().eval_tokens_total._value.get() >= 48
