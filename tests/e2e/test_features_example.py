"""examples/features through `kubetune run` on the CPU: tool-calling SFT tracked by TensorBoard, KTO on
unpaired labels and ORPO on LLaMA-Factory v1 pairs, each from data prepare to a trained adapter."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_features_example_runs_end_to_end(tmp_path):
    inputs = tmp_path / "inputs"
    for sample in ("tools", "kto", "llamafactory_v1"):
        shutil.copytree(ROOT / "tests" / "fixtures" / "data" / sample, inputs / sample)
    subprocess.run(
        [str(BIN / "kubetune-trainer"), "model", "tiny", "--corpus", str(inputs / "**" / "*.json*"),
         "--output", str(inputs / "base")],
        check=True, capture_output=True, timeout=300,
    )
    done = subprocess.run(
        [str(BIN / "kubetune"), "run", *sorted(str(p) for p in (ROOT / "examples" / "features").glob("*.yaml")),
         "--artifacts", "artifacts", "--workdir", ".kubetune"],
        cwd=tmp_path, capture_output=True, text=True, timeout=1500,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    jobs = tmp_path / "artifacts" / "default" / "finetunejobs"
    for name, method in (("toolcall-sft", "sft"), ("feedback-kto", "kto"), ("v1-orpo", "orpo")):
        manifest = json.loads((jobs / name / "manifest.json").read_text())
        assert manifest["method"] == method and manifest["steps"] == 4
        assert (jobs / name / "plots" / "loss.png").is_file()
    tool_rows = (tmp_path / "artifacts" / "default" / "preferencedatasets" / "toolcall-data" / "train.jsonl")
    assert '"tool_calls"' in tool_rows.read_text()
    assert list((jobs / "toolcall-sft" / "tensorboard").iterdir())
    assert json.loads((jobs / "v1-orpo" / "final" / "kubetune.json").read_text())["referenceModel"] is None
    assert "FineTuneJob/toolcall-sft tensorboard --logdir artifacts/default/finetunejobs/toolcall-sft/tensorboard" in (
        done.stdout
    )
    assert "FineTuneJob/feedback-kto curves: artifacts/default/finetunejobs/feedback-kto/plots/loss.png" in done.stdout
