"""images/*/Dockerfile: hadolint-clean, non-root, pinned like the pyprojects; values.yaml names them.

These read the Dockerfiles; tests/images builds the images and runs them (`make images-test`).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from chart_render import CHART, ROOT

import kubetune_operator

IMAGES = ROOT / "images"
HADOLINT = Path(sys.executable).with_name("hadolint")
PIN = re.compile(r"(?<![\w.-])([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[\w,-]+\])?==([\w.!+-]+)")


def dockerfile(image: str) -> str:
    return (IMAGES / image / "Dockerfile").read_text(encoding="utf-8")


def pyproject(dist: str) -> dict:
    return tomllib.loads((ROOT / dist / "pyproject.toml").read_text(encoding="utf-8"))


def pins(requirements: list[str]) -> dict[str, str]:
    return {name.lower(): version for name, version in (PIN.search(r).groups() for r in requirements if PIN.search(r))}


def all_pins(dist: str) -> dict[str, str]:
    project = pyproject(dist)
    requirements = list(project["project"]["dependencies"]) + list(project["build-system"]["requires"])
    for extra in project["project"].get("optional-dependencies", {}).values():
        requirements += extra
    return pins(requirements)


@pytest.mark.parametrize("image", ["operator", "trainer", "eval"])
def test_hadolint_finds_nothing(image):
    result = subprocess.run([str(HADOLINT), "--no-color", "--format", "json", str(IMAGES / image / "Dockerfile")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and json.loads(result.stdout) == [], result.stdout + result.stderr


@pytest.mark.parametrize("image", ["operator", "trainer", "eval"])
def test_images_run_as_a_numeric_non_root_user(image):
    users = re.findall(r"^USER\s+(\S+)", dockerfile(image), flags=re.MULTILINE)
    assert users, f"{image}: no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"{image}: USER {users[-1]}"


@pytest.mark.parametrize(("image", "dist"), [("operator", "operator"), ("trainer", "trainer"), ("eval", "trainer")])
def test_versions_in_images_are_the_pyproject_pins(image, dist):
    expected = all_pins(dist)
    for name, version in PIN.findall(dockerfile(image)):
        if name.lower() in expected:
            assert version == expected[name.lower()], f"images/{image}: {name}=={version}, {dist} pins {expected[name.lower()]}"


def test_the_operator_image_carries_no_ml_stack():
    text = dockerfile("operator")
    assert "pip install --no-cache-dir /src/operator\n" in text, "the operator installs without extras"
    runtime = pins(pyproject("operator")["project"]["dependencies"])
    assert runtime.keys().isdisjoint({"torch", "transformers", "trl", "peft", "deepspeed", "vllm", "kubetune-trainer"})
    assert not re.search(r"torch|cuda", text.split("FROM", 1)[1], flags=re.IGNORECASE)


@pytest.mark.parametrize("image", ["operator", "trainer", "eval"])
def test_each_image_takes_its_base_as_a_build_arg(image):
    """`make images` builds the same file on a local base (tests/images): BASE is the only difference."""
    text = dockerfile(image)
    assert re.search(r"^ARG BASE=\S+$", text.split("FROM", 1)[0], flags=re.MULTILINE), f"{image}: no ARG BASE before FROM"
    froms = re.findall(r"^FROM (\S+)", text, flags=re.MULTILINE)
    assert froms and all(f == "${BASE}" for f in froms), f"{image}: FROM {froms}"


def test_the_trainer_image_is_python_slim_with_torch_and_the_gpu_extra():
    """No CUDA base: torch's wheels bring CUDA's libraries; no flash-attn (docs/install.md says why)."""
    text = dockerfile("trainer")
    assert re.search(r"^ARG BASE=python:3\.11-slim-bookworm$", text, flags=re.MULTILINE)
    assert f"torch=={all_pins('trainer')['torch']}" in text
    assert '["optional-dependencies"]["gpu"]' in text and "--no-deps /src/trainer" in text
    assert "flash-attn" not in all_pins("trainer") and "nvidia/cuda" not in text


def test_the_eval_image_is_the_trainer_image_plus_vllm():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    text = dockerfile("eval")
    assert re.search(rf"^ARG BASE=ghcr\.io/kubetune/trainer:{re.escape(chart['appVersion'])}$", text, flags=re.MULTILINE)
    assert '["optional-dependencies"]["vllm"]' in text
    assert pyproject("trainer")["project"]["optional-dependencies"]["vllm"] == [f"vllm=={all_pins('trainer')['vllm']}"]


def test_the_eval_image_installs_vllm_against_the_trainers_packages():
    """pip swaps an installed torch (or transformers) for another pin without a word; vLLM's kernels then fail to load."""
    text = dockerfile("eval")
    constraints = re.search(r"pip freeze --exclude kubetune-trainer > (\S+)", text)
    assert constraints, "the eval image must hold the trainer image's packages as constraints"
    assert re.search(rf"pip install --no-cache-dir --constraint {re.escape(constraints.group(1))} ", text)


def test_values_name_the_three_images_at_the_app_version():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    versions = {
        "appVersion": chart["appVersion"],
        "operator/pyproject.toml": pyproject("operator")["project"]["version"],
        "trainer/pyproject.toml": pyproject("trainer")["project"]["version"],
        "kubetune_operator.__version__": kubetune_operator.__version__,
    }
    assert len(set(versions.values())) == 1, versions
    for image in ("operator", "trainer", "eval"):
        # An empty tag renders as the appVersion (test_chart_manifests holds the rendered names).
        assert values["images"][image] == {"repository": f"ghcr.io/kubetune/{image}", "tag": ""}
        assert (IMAGES / image / "Dockerfile").is_file()
        assert f"-t ghcr.io/kubetune/{image}:{chart['appVersion']} ." in dockerfile(image)
