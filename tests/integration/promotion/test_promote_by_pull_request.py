"""`kubetune promote --pull-request`: the commit goes to a branch of its own over smart HTTP, and the
request into the target branch goes to a fake forge API that checks each call.

No real Gitea, GitLab or GitHub runs here: none installs from Debian, PyPI or npm, and building
Gitea from the Go module proxy is a long compile. The fake speaks Gitea's API as documented.
"""

from __future__ import annotations

import json

from promotion_git import branch_tip, git, make_bare_repo, show

from kubetune_operator.cli import main
from tests.unit.operator.promotion.fake_forge import Expect, FakeForge

PATH = "serving"


def test_a_promotion_by_pull_request_pushes_its_branch_opens_one_request_and_stops_once_merged(
    git_http, record_factory, termination_log, tmp_path, capsys
):
    root, base_url, token = git_http
    repo = make_bare_repo(root / "team" / "gitops.git", {"README.md": "GitOps\n"})
    start = branch_tip(repo)
    secret = tmp_path / "git-secret"
    secret.mkdir()
    (secret / "token").write_text(token)
    (secret / "username").write_text("kubetune")
    record = record_factory(uid="0b6f6a52-1111-4000-8000-000000000002")
    head = "kubetune/promote-support-dpo-0b6f6a52"

    with FakeForge() as forge:
        pulls = "/api/v1/repos/team/gitops/pulls"
        listing = {"state": "all", "sort": "newest", "page": "1", "limit": "50"}
        auth = {"Authorization": f"token {token}"}
        opened = {"number": 12, "html_url": "https://git.example.com/team/gitops/pulls/12", "state": "open",
                  "merged": False, "head": {"ref": head}, "base": {"ref": "main"}}

        def promote() -> int:
            return main(["promote", "--record", str(record), "--repo", f"{base_url}/team/gitops.git",
                         "--branch", "main", "--path", PATH, "--credentials-dir", str(secret),
                         "--pull-request", "gitea", "--api-url", f"{forge.url}/api/v1"])

        forge.expect(
            Expect("GET", pulls, answer=[], query=listing, headers=auth),
            Expect("POST", pulls, 201, opened, headers=auth, body={
                "head": head, "base": "main", "title": "Promote adapter support-dpo from EvalRun team-a/support-eval"}),
        )
        assert promote() == 0, capsys.readouterr().err
        summary = json.loads(termination_log.read_text())
        assert (summary["branch"], summary["baseBranch"], summary["created"]) == (head, "main", True)
        assert summary["pullRequest"] == {"number": 12, "url": opened["html_url"], "state": "open", "created": True}
        # The target branch is untouched; the head branch holds the promotion on top of it.
        assert branch_tip(repo) == start
        assert git("--git-dir", str(repo), "rev-parse", f"{branch_tip(repo, head)}^") == start
        assert "support-dpo" in show(repo, f"{head}:{PATH}/adapters/support-dpo/promotion.yaml")
        assert "Kubetune-EvalRun-UID: 0b6f6a52" in forge.seen[1]["body"]["body"]
        assert "pull request #12 into main opened" in capsys.readouterr().out

        # A retried promote Job pushes nothing new and finds the request it opened.
        forge.expect(Expect("GET", pulls, answer=[opened], query=listing, headers=auth))
        assert promote() == 0
        again = json.loads(termination_log.read_text())
        assert (again["commit"], again["created"]) == (summary["commit"], False)
        assert again["pullRequest"]["created"] is False

        # Merged (here: main fast-forwarded to the branch): the forge is not even asked.
        git("--git-dir", str(repo), "update-ref", "refs/heads/main", branch_tip(repo, head))
        assert promote() == 0
        merged = json.loads(termination_log.read_text())
        assert (merged["branch"], merged["commit"], merged["created"]) == ("main", summary["commit"], False)
        assert "pullRequest" not in merged
        assert forge.script == [] and forge.problems == [], forge.problems
