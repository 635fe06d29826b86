"""The control plane never imports the ML stack; the data plane never imports kopf.

`lint-imports` (import-linter, contracts in .importlinter) enforces it on the real packages;
the second test proves the check bites by adding `import torch` to a copy of the operator.
"""

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def run_lint_imports(cwd: Path, pythonpath: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=cwd,
        env={"PYTHONPATH": pythonpath, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_contracts_hold_on_the_tree():
    result = run_lint_imports(ROOT, f"{ROOT}/operator/src:{ROOT}/trainer/src")
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_import_of_torch_in_the_operator_is_caught(tmp_path):
    for dist, package in (("operator", "kubetune_operator"), ("trainer", "kubetune_trainer")):
        shutil.copytree(ROOT / dist / "src" / package, tmp_path / dist / package)
    (tmp_path / "operator" / "kubetune_operator" / "sneaky.py").write_text("import torch\n")
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    result = run_lint_imports(tmp_path, f"{tmp_path}/operator:{tmp_path}/trainer")
    assert result.returncode != 0
    assert "kubetune_operator.sneaky -> torch" in result.stdout, result.stdout


def test_an_import_of_kopf_in_the_trainer_is_caught(tmp_path):
    for dist, package in (("operator", "kubetune_operator"), ("trainer", "kubetune_trainer")):
        shutil.copytree(ROOT / dist / "src" / package, tmp_path / dist / package)
    (tmp_path / "trainer" / "kubetune_trainer" / "sneaky.py").write_text(
        textwrap.dedent(
            """
            def later():
                import kopf
                return kopf
            """
        )
    )
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    result = run_lint_imports(tmp_path, f"{tmp_path}/operator:{tmp_path}/trainer")
    assert result.returncode != 0
    assert "kubetune_trainer.sneaky -> kopf" in result.stdout, result.stdout
