"""`make demo`'s path: examples/demo through `kubetune run` on the CPU, then again with nothing to do."""

import json
import subprocess
import sys
from pathlib import Path

import openpyxl
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def kubetune_run(workdir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "kubetune"), "run", *sorted(str(p) for p in (ROOT / "examples" / "demo").glob("*.yaml")),
         "--artifacts", "demo-artifacts", "--workdir", ".kubetune"],
        cwd=workdir, capture_output=True, text=True, timeout=900,
    )


def demo_gate(name: str) -> dict:
    """A gate of the demo's EvalRun as written in examples/demo/04-eval.yaml."""
    evalrun = yaml.safe_load((ROOT / "examples" / "demo" / "04-eval.yaml").read_text())
    return next(gate for gate in evalrun["spec"]["gates"] if gate["name"] == name)


def test_demo_story_runs_and_a_second_run_skips_every_step(tmp_path):
    subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo" / "make_inputs.py"), "--output", "demo-artifacts/inputs"],
        cwd=tmp_path, check=True, capture_output=True, timeout=300,
    )
    first = kubetune_run(tmp_path)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    assert "report: demo-artifacts/default/evalruns/demo-eval/report.html" in first.stdout

    report_dir = tmp_path / "demo-artifacts" / "default" / "evalruns" / "demo-eval"
    summary = json.loads((report_dir / "summary.json").read_text())
    assert summary["passed"] and summary["baseline"] == "sft"
    assert summary["confidence"] == 0.95
    sft, dpo = summary["metrics"]["sft"], summary["metrics"]["dpo"]
    # The story's claims, whatever the processor's digits: the bad case is gone as a number (the
    # 95% intervals of the repetition rate do not even overlap, and the whole interval of the change
    # lies below the gate's threshold) ...
    assert dpo["repetition.ngram_rate"]["ciHigh"] < sft["repetition.ngram_rate"]["ciLow"]
    gates = {gate["name"]: gate for gate in summary["gates"]}
    falls, holds = demo_gate("repetition_falls"), demo_gate("accuracy_holds")
    assert falls["useConfidenceBound"] and falls["threshold"] < 0
    assert summary["deltas"]["dpo"]["repetition.ngram_rate"]["ciHigh"] < falls["threshold"]
    assert gates["repetition_falls"]["passed"]
    # ... and accuracy does not fall: non-inferiority, the lower end of the interval of the change
    # above minus the stated margin, not a point estimate compared with 0.
    assert holds["useConfidenceBound"] and holds["comparator"] == ">=" and holds["threshold"] < 0
    assert summary["deltas"]["dpo"]["contains"]["ciLow"] >= holds["threshold"]
    assert gates["accuracy_holds"]["passed"] and gates["accuracy_holds"]["useConfidenceBound"]
    html = (report_dir / "report.html").read_text()
    assert "sft" in html and "dpo" in html and "data:image/png;base64," in html
    # The replay set's topics are its subtypes: every metric is scored per topic too.
    assert set(summary["strata"]["values"]) == {"hotel", "museum", "train", "weather"}
    assert (report_dir / "plots" / "per_subtype_contains.png").exists()
    workbook = openpyxl.load_workbook(report_dir / "results.xlsx")
    assert workbook.sheetnames

    lineage = json.loads(
        (tmp_path / "demo-artifacts/default/finetunejobs/demo-dpo/final/kubetune.json").read_text()
    )
    assert lineage["mergedAdapters"][0]["uri"].endswith("finetunejobs/demo-sft/final")

    second = kubetune_run(tmp_path)
    assert second.returncode == 0, second.stdout[-4000:]
    skipped = [line for line in second.stdout.splitlines() if line.startswith("Skipped ")]
    assert len(skipped) == 5 and all(line.endswith("(up to date)") for line in skipped), second.stdout
    assert "report: demo-artifacts/default/evalruns/demo-eval/report.html" in second.stdout
