"""Benchmark: does the demo's story hold on every seed and under every CPU kernel setting?

For each seed and each setting, this writes the demo's inputs with that seed
(examples/demo/make_inputs.py --seed: the facts, the row order and split, the base model's weights),
sets `hyperparameters.seed` of both FineTuneJobs to it (LoRA initialisation, data order), runs
examples/demo/*.yaml through `kubetune run` in a fresh directory, and reads the EvalRun's summary.
A setting is an environment for the run: `native` (nothing set), or `VAR=value,...` such as
`ATEN_CPU_CAPABILITY=avx2` (ATen's vectorised kernels on AVX2 only) or
`ATEN_CPU_CAPABILITY=default` (no vector kernels), `MKL_CBWR=COMPATIBLE` (MKL's processor-independent
code path); `kubetune run` hands such variables to its steps. The word `deterministic` in a setting
sets `hyperparameters.deterministic: true` on both FineTuneJobs (transformers' full_determinism).

It prints a Markdown table, one row a run: the repeated-n-gram rate of the SFT baseline and of
DPO with their 95% intervals and the gap between the intervals; `contains` accuracy of both, the
change and the lower end of its interval against the non-inferiority margin of the demo's
`accuracy_holds` gate; whether every gate passed; a digest of all answers (equal digests: the
same answers, token for token); the final training loss of SFT and of DPO (different digits: the
setting did change the arithmetic); the seconds both trainings took (their manifests' `train`
timing) and the whole run took. It exits 1 when a claim fails in any run:

- the intervals of the repetition rate are apart (DPO's upper end below the baseline's lower end);
- every gate passes: `repetition_falls` (the interval of the change lies below its threshold) and
  `accuracy_holds` (non-inferiority: the interval's lower end is above minus the margin).

    .venv/bin/python bench/demo_seeds.py --seeds 0 1 2 3 4 \\
        --settings ATEN_CPU_CAPABILITY=avx2 ATEN_CPU_CAPABILITY=default
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "demo"
BIN = Path(sys.executable).parent
EVAL = Path("demo-artifacts/default/evalruns/demo-eval")
JOBS = Path("demo-artifacts/default/finetunejobs")


def environment(setting: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in setting.split(",") if "=" in item)


def deterministic(setting: str) -> bool:
    return "deterministic" in setting.split(",")


def seeded_documents(seed: int, target: Path, setting: str) -> list[Path]:
    """The demo's YAML with `hyperparameters.seed` of every FineTuneJob set to `seed`."""
    paths = []
    for path in sorted(DEMO.glob("*.yaml")):
        documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
        for document in documents:
            if document["kind"] == "FineTuneJob":
                document["spec"].setdefault("hyperparameters", {})["seed"] = seed
                if deterministic(setting):
                    document["spec"]["hyperparameters"]["deterministic"] = True
        paths.append(target / path.name)
        paths[-1].write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return paths


def run_once(seed: int, setting: str, scratch: Path) -> dict:
    work = scratch / f"seed{seed}-{setting.replace('=', '-').replace(',', '+')}"
    shutil.rmtree(work, ignore_errors=True)
    (work / "yaml").mkdir(parents=True)
    env = {**os.environ, **environment(setting)}
    subprocess.run(
        [sys.executable, str(DEMO / "make_inputs.py"), "--output", "demo-artifacts/inputs", "--seed", str(seed)],
        cwd=work, env=env, check=True, capture_output=True,
    )
    started = time.perf_counter()
    result = subprocess.run(
        [str(BIN / "kubetune"), "run", *map(str, seeded_documents(seed, work / "yaml", setting)),
         "--artifacts", "demo-artifacts", "--workdir", "demo-artifacts/.kubetune"],
        cwd=work, env=env, capture_output=True, text=True,
    )
    seconds = time.perf_counter() - started
    summary_file = work / EVAL / "summary.json"
    if not summary_file.exists():
        raise SystemExit(f"seed {seed}, {setting}: the demo did not finish (exit {result.returncode}):\n"
                         + result.stdout[-3000:] + result.stderr[-3000:])
    summary = json.loads(summary_file.read_text())
    trained = {
        name: json.loads((work / JOBS / name / "manifest.json").read_text()) for name in ("demo-sft", "demo-dpo")
    }
    predictions = (work / EVAL / "predictions.jsonl").read_text().splitlines()
    answers = [(row["candidate"], row["index"], row["predict"]) for row in map(json.loads, predictions)]
    return {
        "seed": seed,
        "setting": setting,
        "summary": summary,
        "answers": hashlib.sha256(json.dumps(sorted(answers)).encode()).hexdigest()[:10],
        "seconds": seconds,
        "losses": [trained[name]["finalLoss"] for name in ("demo-sft", "demo-dpo")],
        "train_seconds": sum(manifest["timings"]["train"] for manifest in trained.values()),
        "exit": result.returncode,
    }


def margin() -> float:
    """Minus the threshold of the demo's non-inferiority gate."""
    evalrun = yaml.safe_load((DEMO / "04-eval.yaml").read_text())
    gate = next(g for g in evalrun["spec"]["gates"] if g["name"] == "accuracy_holds")
    assert gate["comparator"] == ">=" and gate["relativeToBaseline"] and gate["useConfidenceBound"], gate
    return -float(gate["threshold"])


def claims(run: dict) -> dict:
    summary = run["summary"]
    sft, dpo = summary["metrics"]["sft"], summary["metrics"]["dpo"]
    rate_sft, rate_dpo = sft["repetition.ngram_rate"], dpo["repetition.ngram_rate"]
    change = summary["deltas"]["dpo"]["contains"]
    return {
        "rate_sft": rate_sft,
        "rate_dpo": rate_dpo,
        "gap": rate_sft["ciLow"] - rate_dpo["ciHigh"],
        "acc_sft": sft["contains"],
        "acc_dpo": dpo["contains"],
        "change": change,
        "gates": {g["name"]: g["passed"] for g in summary["gates"]},
    }


def interval(estimate: dict) -> str:
    return f"{estimate['value']:.3f} [{estimate['ciLow']:.3f}, {estimate['ciHigh']:.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--settings", nargs="+", default=["ATEN_CPU_CAPABILITY=avx2", "ATEN_CPU_CAPABILITY=default"])
    parser.add_argument("--scratch", type=Path, help="keep the runs here (default: a temporary directory)")
    args = parser.parse_args()
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="demo-seeds-"))
    non_inferiority = margin()
    print(f"non-inferiority margin of accuracy_holds: {non_inferiority:g}; runs in {scratch}\n")
    print("| seed | setting | n-gram rate SFT [95% CI] | n-gram rate DPO [95% CI] | gap | contains SFT | "
          "contains DPO | Δ contains [95% CI] | Δ low ≥ −margin | gates | answers | final loss SFT, DPO | "
          "train s | s |")
    print("|---:|---|---|---|---:|---:|---:|---|---|---|---|---|---:|---:|")
    failures = []
    for seed in args.seeds:
        for setting in args.settings:
            run = run_once(seed, setting, scratch)
            found = claims(run)
            holds = found["change"]["ciLow"] >= -non_inferiority
            passed = all(found["gates"].values())
            print(
                f"| {seed} | {setting} | {interval(found['rate_sft'])} | {interval(found['rate_dpo'])} | "
                f"{found['gap']:.3f} | {found['acc_sft']['value']:.3f} | {found['acc_dpo']['value']:.3f} | "
                f"{interval(found['change'])} | {'yes' if holds else 'NO'} | "
                f"{'pass' if passed else 'FAIL: ' + ', '.join(k for k, v in found['gates'].items() if not v)} | "
                f"{run['answers']} | {run['losses'][0]:.6g}, {run['losses'][1]:.6g} | "
                f"{run['train_seconds']:.1f} | {run['seconds']:.0f} |",
                flush=True,
            )
            if found["gap"] <= 0 or not holds or not passed or run["exit"] != 0:
                failures.append(f"seed {seed}, {setting}")
    if failures:
        print(f"\nclaims fail: {'; '.join(failures)}")
        raise SystemExit(1)
    print(f"\nevery claim holds in all {len(args.seeds) * len(args.settings)} runs")


if __name__ == "__main__":
    main()
