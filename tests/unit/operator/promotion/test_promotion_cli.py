"""`kubetune promote` / `kubetune rollback` arguments: refused by name before any git runs."""

from __future__ import annotations

import json

import pytest

from kubetune_operator.cli import main
from kubetune_operator.promotion.termination import MAX_BYTES, write_termination_summary


@pytest.fixture
def termination_log(tmp_path, monkeypatch):
    path = tmp_path / "termination-log"
    monkeypatch.setenv("KUBETUNE_TERMINATION_LOG", str(path))
    return path


def promote(*changes: str, tmp_path) -> int:
    arguments = {
        "--record": str(tmp_path / "record.json"),
        "--repo": str(tmp_path / "gitops.git"),
        "--branch": "main",
        "--path": "llm",
    }
    extra = dict(zip(changes[::2], changes[1::2], strict=True))
    return main(["promote", *[part for pair in {**arguments, **extra}.items() for part in pair]])


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (("--path", "../elsewhere"), "--path '../elsewhere': must be a relative directory"),  # refused input
        (("--path", "/etc"), "--path '/etc': must be a relative directory"),
        (("--path", "llm\nprod"), "--path 'llm\\nprod': must not contain control characters"),
        (("--branch", "bad..name"), "--branch 'bad..name': not a valid git branch name"),
        (("--base-branch", "x~1"), "--base-branch 'x~1': not a valid git branch name"),
        (("--attempts", "0"), "--attempts 0: must be at least 1"),
        (("--author", "release-bot"), "--author 'release-bot': must look like 'Name <email@example.com>'"),
    ],
)
def test_bad_arguments_are_refused_by_name(tmp_path, termination_log, capsys, changes, message):
    (tmp_path / "record.json").write_text("{}")

    assert promote(*changes, tmp_path=tmp_path) == 64

    assert message in capsys.readouterr().err
    assert json.loads(termination_log.read_text())["reason"] == "BadConfig"


def test_a_password_in_the_repository_url_is_refused_and_never_repeated(tmp_path, termination_log, capsys):
    assert promote("--repo", "https://bot:hunter2@git.example.com/g.git", tmp_path=tmp_path) == 64

    _, err = capsys.readouterr()
    assert "credentials Secret" in err
    assert "hunter2" not in err + termination_log.read_text()


@pytest.mark.parametrize("command", ["promote", "rollback"])
def test_a_repository_that_git_would_read_as_an_option_is_refused(tmp_path, termination_log, capsys, command):
    (tmp_path / "record.json").write_text("{}")
    planted = tmp_path / "planted"
    which = ["--record", str(tmp_path / "record.json")] if command == "promote" else ["--adapter", "support-dpo"]

    code = main([command, *which, f"--repo=--upload-pack=touch {planted};", "--branch", "main", "--path", "llm"])

    assert code == 64
    assert "cannot start with '-'" in capsys.readouterr().err
    assert not planted.exists()


def test_rollback_refuses_a_name_that_is_no_adapter(tmp_path, termination_log, capsys):
    code = main(
        [
            "rollback",
            "--adapter",
            "Not An Adapter",
            "--repo",
            str(tmp_path),
            "--branch",
            "main",
            "--path",
            "llm",
        ]
    )

    assert code == 64
    assert "--adapter 'Not An Adapter': not an adapter name" in capsys.readouterr().err


def test_a_long_error_is_cut_to_what_kubernetes_keeps(termination_log):
    write_termination_summary({"kind": "promotion", "error": "é" * 5000, "reason": "StorageError"})

    text = termination_log.read_text()
    assert len(text.encode()) <= MAX_BYTES
    summary = json.loads(text)
    assert summary["reason"] == "StorageError"
    assert summary["error"].endswith("…")
