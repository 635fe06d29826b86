"""The eval image: its entrypoint, user, size and OCI export; vLLM at its pin on the trainer's
torch; and the eval CLI, run as the operator's EvalRun pod runs (read-only root, its mounts)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from tests.images.common import (
    job_pod,
    rendered,
    test_entrypoint_answers_version_and_help,
    test_exports_as_an_oci_archive_that_skopeo_reads,
    test_size_is_within_its_limit,
    test_the_image_runs_as_the_charts_non_root_user,
)
from tests.images.harness import InImage

IMAGE = "eval"
ROOT = Path(__file__).resolve().parents[2]

__all__ = ["test_entrypoint_answers_version_and_help", "test_exports_as_an_oci_archive_that_skopeo_reads",
           "test_size_is_within_its_limit", "test_the_image_runs_as_the_charts_non_root_user"]


def evalrun_pod() -> tuple[dict, dict]:
    return job_pod(rendered(ROOT / "examples" / "evalrun.yaml", artifact_root="/scratch/artifacts"), "evalrun")


def test_vllm_imports_at_its_pin_on_the_trainers_torch(in_image: InImage):
    pod, container = evalrun_pod()
    script = "import json, torch, vllm; print(json.dumps([vllm.__version__, torch.__version__]))"
    result, log = in_image.pod(["python3", "-c", script], container, pod)
    assert result.code == 0, log
    pins = tomllib.loads((ROOT / "trainer" / "pyproject.toml").read_text())["project"]
    vllm_pin = pins["optional-dependencies"]["vllm"][0].split("==")[1]
    torch_pin = next(r for r in pins["dependencies"] if r.startswith("torch==")).split("==")[1]
    vllm_version, torch_version = json.loads(log.strip().splitlines()[-1])
    assert vllm_version == vllm_pin and torch_version.split("+")[0] == torch_pin, log


def test_eval_cli_answers_in_the_evalrun_pod(in_image: InImage):
    pod, container = evalrun_pod()
    assert container["image"] == in_image.built.spec.reference
    assert container["command"][:2] == ["kubetune-trainer", "eval"], container["command"]
    result, log = in_image.pod(["kubetune-trainer", "eval", "--help"], container, pod)
    assert result.code == 0 and log.startswith("usage: kubetune-trainer eval"), log
