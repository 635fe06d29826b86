"""`kubetune promote` / `kubetune rollback` against bare repositories on disk (real git)."""

from __future__ import annotations

import json
import subprocess

import yaml
from promotion_git import PASSED_RECORD, branch_tip, checkout, git, make_bare_repo, show

from kubetune_operator.cli import main

PATH = "clusters/prod/llm"
GROUP_FILES = ("kustomization.yaml", "vllm.yaml", "adapters.json", "base.json")


def promote(repo, record, *extra: str) -> int:
    return main(
        ["promote", "--record", str(record), "--repo", str(repo), "--branch", "main", "--path", PATH, *extra]
    )


def rollback(repo, adapter: str, *extra: str) -> int:
    return main(
        ["rollback", "--adapter", adapter, "--repo", str(repo), "--branch", "main", "--path", PATH, *extra]
    )


def commit_count(repo, branch: str = "main") -> int:
    return int(git("--git-dir", str(repo), "rev-list", "--count", f"refs/heads/{branch}"))


def serving_groups(repo, revision: str = "main") -> list[str]:
    listing = git("--git-dir", str(repo), "ls-tree", "--name-only", f"{revision}:{PATH}/serving")
    return listing.splitlines()


def served(repo, revision: str = "main") -> dict[str, str]:
    """Adapter name -> URI over every serving group's index."""
    index = {}
    for group in serving_groups(repo, revision):
        for entry in json.loads(show(repo, f"{revision}:{PATH}/serving/{group}/adapters.json")):
            index[entry["name"]] = entry["uri"]
    return index


def test_promotion_commits_the_record_and_a_kustomize_vllm_fragment(
    remote, record_factory, termination_log, capsys, tmp_path
):
    record = record_factory()
    before = branch_tip(remote)

    assert promote(remote, record, "--author", "Release Bot <release-bot@example.com>") == 0

    tip = branch_tip(remote)
    assert git("--git-dir", str(remote), "rev-parse", f"{tip}^") == before
    assert yaml.safe_load(show(remote, f"main:{PATH}/adapters/support-dpo/promotion.yaml")) == json.loads(
        record.read_text()
    )
    message = git("--git-dir", str(remote), "log", "-1", "--format=%an <%ae>%n%B", "main")
    assert message.splitlines()[0] == "Release Bot <release-bot@example.com>"
    assert message.splitlines()[1] == "Promote adapter support-dpo from EvalRun team-a/support-eval"
    assert "Kubetune-EvalRun-UID: uid-support-dpo-support-eval" in message
    assert f"commit {tip}" in capsys.readouterr().out
    assert json.loads(termination_log.read_text()) == {
        "kind": "promotion",
        "repository": str(remote),
        "branch": "main",
        "path": PATH,
        "commit": tip,
        "created": True,
    }

    # What Argo CD or Flux would apply: one ConfigMap per true base, with vLLM's --config file.
    built = subprocess.run(
        ["kubectl", "kustomize", str(checkout(remote, tmp_path / "checkout") / PATH)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (config_map,) = list(yaml.safe_load_all(built))
    assert config_map["kind"] == "ConfigMap"
    assert config_map["metadata"]["name"].startswith("kubetune-lora-qwen2-0-5b-")
    vllm = yaml.safe_load(config_map["data"]["vllm.yaml"])
    assert vllm == {
        "enable-lora": True,
        "max-loras": 1,
        "max-lora-rank": 32,
        "lora-modules": ["support-dpo=/adapters/support-dpo"],
    }
    (entry,) = json.loads(config_map["data"]["adapters.json"])
    assert entry["uri"] == "s3://artifacts/team-a/finetunejobs/support-dpo-support-eval/final"
    assert entry["sha256"] == PASSED_RECORD["adapter"]["sha256"]
    assert json.loads(config_map["data"]["base.json"]) == PASSED_RECORD["adapter"]["trueBase"]


def test_promoting_the_same_evalrun_again_makes_no_second_commit(
    remote, record_factory, termination_log, capsys
):
    record = record_factory()
    assert promote(remote, record) == 0
    first = branch_tip(remote)

    assert promote(remote, record) == 0

    assert branch_tip(remote) == first
    assert "nothing to do" in capsys.readouterr().out
    assert json.loads(termination_log.read_text())["created"] is False
    assert json.loads(termination_log.read_text())["commit"] == first


def test_a_squash_merged_promotion_is_recognised_by_its_content(remote, record_factory, capsys):
    record = record_factory()
    assert (
        main(
            ["promote", "--record", str(record), "--repo", str(remote), "--branch", "review", "--path", PATH]
        )
        == 0
    )
    # A forge's squash merge: the same tree on main, under a message without kubetune's trailers.
    squashed = git(
        "--git-dir", str(remote), "commit-tree", "review^{tree}", "-p", "main", "-m", "Merge review (#12)"
    )
    git("--git-dir", str(remote), "update-ref", "refs/heads/main", squashed)

    assert promote(remote, record) == 0

    assert branch_tip(remote) == squashed
    assert f"commit {squashed}; nothing to do" in capsys.readouterr().out


def test_a_record_whose_gates_failed_is_refused_without_a_commit(
    remote, record_factory, termination_log, capsys
):
    failed_gate = {**PASSED_RECORD["evalRun"]["gates"][0], "value": 0.80, "passed": False}
    record = record_factory(evalRun__passed=False, evalRun__gates=[failed_gate])
    before = branch_tip(remote)

    assert promote(remote, record) == 64

    assert branch_tip(remote) == before
    error = capsys.readouterr().err
    assert "failed its gates: pass-rate (pass_rate >= 0.85, got 0.8)" in error
    summary = json.loads(termination_log.read_text())
    assert summary["reason"] == "BadConfig"
    assert "failed its gates" in summary["error"]


def test_adapters_on_one_base_share_an_engine_and_other_bases_get_their_own(remote, record_factory):
    assert promote(remote, record_factory(name="support-dpo")) == 0
    assert promote(remote, record_factory(name="billing-dpo")) == 0
    (group,) = serving_groups(remote)
    vllm = yaml.safe_load(show(remote, f"main:{PATH}/serving/{group}/vllm.yaml"))
    assert vllm["lora-modules"] == ["billing-dpo=/adapters/billing-dpo", "support-dpo=/adapters/support-dpo"]
    assert vllm["max-loras"] == 2

    other_base = {"baseModel": "s3://models/qwen2-1.5b", "mergedAdapters": []}
    assert promote(remote, record_factory(name="legal-sft", adapter__trueBase=other_base)) == 0

    groups = serving_groups(remote)
    assert len(groups) == 2
    root = yaml.safe_load(show(remote, f"main:{PATH}/kustomization.yaml"))
    assert root["resources"] == [f"serving/{name}" for name in groups]
    assert set(served(remote)) == {"support-dpo", "billing-dpo", "legal-sft"}


def test_a_missing_target_branch_starts_from_the_default_branch_for_review(remote, record_factory):
    main_before = branch_tip(remote)

    assert (
        main(
            [
                "promote",
                "--record",
                str(record_factory()),
                "--repo",
                str(remote),
                "--branch",
                "kubetune/review",
                "--path",
                PATH,
            ]
        )
        == 0
    )

    assert branch_tip(remote) == main_before
    assert git("--git-dir", str(remote), "rev-parse", "refs/heads/kubetune/review^") == main_before


def test_an_empty_repository_gets_a_root_commit(tmp_path, record_factory):
    empty = make_bare_repo(tmp_path / "empty.git")

    assert promote(empty, record_factory()) == 0

    assert commit_count(empty) == 1
    assert "support-dpo" in served(empty)


def test_rollback_restores_the_previous_promotion_then_withdraws(remote, record_factory, capsys):
    assert promote(remote, record_factory(run="eval-v1")) == 0
    v1_commit = branch_tip(remote)
    assert promote(remote, record_factory(run="eval-v2")) == 0
    assert served(remote)["support-dpo"].endswith("support-dpo-eval-v2/final")

    assert rollback(remote, "support-dpo", "--reason", "repeats itself in production") == 0

    record = yaml.safe_load(show(remote, f"main:{PATH}/adapters/support-dpo/promotion.yaml"))
    assert record["action"] == "rollback"
    assert record["evalRun"]["name"] == "eval-v1"
    assert record["rollback"] == {
        "replaces": {"namespace": "team-a", "name": "eval-v2", "uid": "uid-support-dpo-eval-v2"},
        "restores": v1_commit,
        "reason": "repeats itself in production",
    }
    assert served(remote)["support-dpo"].endswith("support-dpo-eval-v1/final")
    assert "rolled back support-dpo to EvalRun team-a/eval-v1" in capsys.readouterr().out

    # The operator retrying v2's promote Job must not undo the rollback, nor claim v2 serves.
    rolled_back = branch_tip(remote)
    assert promote(remote, record_factory(run="eval-v2")) == 0
    assert branch_tip(remote) == rolled_back
    said = capsys.readouterr().out
    assert "was promoted from EvalRun team-a/eval-v2" in said and "is already promoted" not in said

    assert rollback(remote, "support-dpo") == 0
    withdrawn = yaml.safe_load(show(remote, f"main:{PATH}/adapters/support-dpo/promotion.yaml"))
    assert withdrawn["action"] == "withdraw"
    assert yaml.safe_load(show(remote, f"main:{PATH}/kustomization.yaml"))["resources"] == []
    assert "withdrew support-dpo" in capsys.readouterr().out

    assert rollback(remote, "support-dpo") == 64
    assert "is not served" in capsys.readouterr().err


def test_rollback_skips_a_promotion_that_was_already_rolled_back(remote, record_factory):
    for run in ("eval-v1", "eval-v2"):
        assert promote(remote, record_factory(run=run)) == 0
    assert rollback(remote, "support-dpo") == 0  # v2 -> v1
    assert promote(remote, record_factory(run="eval-v3")) == 0

    assert rollback(remote, "support-dpo") == 0

    assert served(remote)["support-dpo"].endswith("support-dpo-eval-v1/final")


def _install_hook(repo, script: str) -> None:
    hook = repo / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\n" + script)
    hook.chmod(0o755)


def test_a_push_that_loses_a_race_is_reapplied_on_the_new_tip(remote, record_factory, caplog):
    # Another promotion is ready on a side branch; the hook lands it on main just before our push
    # updates the ref, exactly as if it had been pushed a moment earlier.
    assert (
        main(
            [
                "promote",
                "--record",
                str(record_factory(name="billing-dpo")),
                "--repo",
                str(remote),
                "--branch",
                "side",
                "--path",
                PATH,
            ]
        )
        == 0
    )
    competitor = branch_tip(remote, "side")
    _install_hook(
        remote,
        'if [ ! -e "$GIT_DIR/raced" ]; then\n'
        '  touch "$GIT_DIR/raced"\n'
        "  env -u GIT_QUARANTINE_PATH git update-ref refs/heads/main refs/heads/side\n"
        "fi\n",
    )

    assert promote(remote, record_factory(name="support-dpo")) == 0

    assert "rejected" in caplog.text
    assert git("--git-dir", str(remote), "rev-parse", "main^") == competitor
    assert set(served(remote)) == {"billing-dpo", "support-dpo"}


def test_a_push_rejected_every_time_ends_in_a_clear_error(remote, record_factory, termination_log, capsys):
    _install_hook(remote, "echo 'protected branch: changes need a review' >&2\nexit 1\n")
    before = branch_tip(remote)

    assert promote(remote, record_factory(), "--attempts", "2") == 71

    assert branch_tip(remote) == before
    error = capsys.readouterr().err
    assert "was rejected 2 times" in error
    assert "pre-receive hook declined" in error
    assert "protected branch: changes need a review" in error
    assert json.loads(termination_log.read_text())["reason"] == "StorageError"
