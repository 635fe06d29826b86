"""`kubetune promote` against repositories served on 127.0.0.1: `git daemon` and smart HTTP with a token."""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys

import yaml
from promotion_git import git, make_bare_repo, show

from kubetune_operator.cli import main

PATH = "serving"


def test_concurrent_promotions_to_one_repository_all_land(git_daemon, record_factory, tmp_path):
    root, base_url = git_daemon
    repo = make_bare_repo(root / "gitops.git", {"README.md": "GitOps\n"})
    names = ["support-dpo", "billing-dpo", "legal-dpo"]
    records = {name: record_factory(name=name) for name in names}

    # Separate processes, started together, as separate promote Jobs would be.
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kubetune_operator",
                "promote",
                "--record",
                str(records[name]),
                "--repo",
                f"{base_url}/gitops.git",
                "--branch",
                "main",
                "--path",
                PATH,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "KUBETUNE_TERMINATION_LOG": str(tmp_path / f"{name}.termination")},
        )
        for name in names
    ]
    results = [process.communicate(timeout=120) + (process.returncode,) for process in processes]

    assert [code for _, _, code in results] == [0, 0, 0], results
    summaries = [json.loads((tmp_path / f"{name}.termination").read_text()) for name in names]
    assert all(summary["created"] for summary in summaries)
    history = git("--git-dir", str(repo), "rev-list", "--first-parent", "main").splitlines()
    assert len(history) == 4
    assert {summary["commit"] for summary in summaries} == set(history[:3])
    (group,) = git("--git-dir", str(repo), "ls-tree", "--name-only", f"main:{PATH}/serving").splitlines()
    vllm = yaml.safe_load(show(repo, f"main:{PATH}/serving/{group}/vllm.yaml"))
    assert vllm["lora-modules"] == [f"{name}=/adapters/{name}" for name in sorted(names)]


def promote_over_http(git_http, record, tmp_path, token: str) -> tuple[int, object]:
    """Promote to a fresh repository behind smart HTTP with `token` in a Secret directory;
    returns the exit code and the repository."""
    root, base_url, _ = git_http
    repo = make_bare_repo(root / "gitops.git", {"README.md": "GitOps\n"})
    secret = tmp_path / "git-secret"
    secret.mkdir()
    (secret / "token").write_text(token + "\n")
    (secret / "username").write_text("kubetune")
    argv = ["promote", "--record", str(record), "--repo", f"{base_url}/gitops.git", "--branch", "main"]
    return main([*argv, "--path", PATH, "--credentials-dir", str(secret)]), repo


def test_a_token_from_the_secret_authenticates_over_smart_http(git_http, record_factory, tmp_path, capsys):
    code, repo = promote_over_http(git_http, record_factory(), tmp_path, token=git_http[2])

    assert code == 0, capsys.readouterr().err
    assert git("--git-dir", str(repo), "log", "-1", "--format=%s", "main").startswith(
        "Promote adapter support-dpo"
    )


def test_a_wrong_token_fails_clearly_and_never_shows_the_secret(
    git_http, record_factory, tmp_path, termination_log, capsys, caplog
):
    caplog.set_level(logging.DEBUG)
    wrong = "ghp_wrongwrongwrongwrongwrongwrong"

    code, repo = promote_over_http(git_http, record_factory(), tmp_path, token=wrong)

    assert code == 71
    assert git("--git-dir", str(repo), "rev-list", "--count", "main") == "1"
    out, err = capsys.readouterr()
    assert "refused the credentials" in err
    assert f"{git_http[1]}/gitops.git" in err
    summary = termination_log.read_text()
    assert json.loads(summary)["reason"] == "StorageError"
    header_value = base64.b64encode(f"kubetune:{wrong}".encode()).decode()
    for secret in (wrong, header_value):
        assert secret not in out + err + summary + caplog.text
