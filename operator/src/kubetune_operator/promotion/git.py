"""The real `git` CLI on a scratch bare repository: fetch one branch, commit without a work tree, push.

Commits are built with plumbing (a private index, `commit-tree`), so re-applying a change on a
newer tip after a rejected push is a fresh build on that tip, not a rebase that could conflict.
"""

from __future__ import annotations

import logging
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from kubetune_operator.promotion.credentials import scrub
from kubetune_operator.promotion.errors import PromotionRefused, RepositoryError

log = logging.getLogger(__name__)

GIT_TIMEOUT_S = 300
_AUTH_FAILURE_SIGNS = (
    "Authentication failed",
    "could not read Username",
    "could not read Password",
    "Permission denied (publickey",
    "The requested URL returned error: 401",
    "The requested URL returned error: 403",
    "Host key verification failed",
)
# Variables from the caller's environment that would make git prompt or pick other credentials.
_CALLER_ONLY = (
    "GIT_ASKPASS",
    "SSH_ASKPASS",
    "GIT_SSH",
    "GIT_SSH_COMMAND",
    "GIT_DIR",
    "GIT_INDEX_FILE",
    "GIT_WORK_TREE",
)


@dataclass(frozen=True)
class Author:
    name: str
    email: str

    def environment(self) -> dict[str, str]:
        return {
            "GIT_AUTHOR_NAME": self.name,
            "GIT_AUTHOR_EMAIL": self.email,
            "GIT_COMMITTER_NAME": self.name,
            "GIT_COMMITTER_EMAIL": self.email,
        }


@dataclass(frozen=True)
class RemoteHeads:
    branches: dict[str, str]  # branch name -> commit
    default_branch: str | None


def check_branch_name(branch: str, option: str) -> str:
    result = subprocess.run(
        ["git", "check-ref-format", f"refs/heads/{branch}"], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise PromotionRefused(f"{option} {branch!r}: not a valid git branch name")
    return branch


class Workspace:
    """A scratch bare repository in `scratch` talking to the remote `url`."""

    def __init__(self, url: str, scratch: Path, credentials_env: dict[str, str], secrets: tuple[str, ...]):
        self.url = url
        self._scratch = scratch
        self._secrets = secrets
        self._git_dir = scratch / "repo.git"
        self._env = {key: value for key, value in os.environ.items() if key not in _CALLER_ONLY}
        self._env.update(credentials_env, GIT_TERMINAL_PROMPT="0", LC_ALL="C")
        self._git("init", "--quiet", "--bare", str(self._git_dir), bare_dir=False)

    def _run(
        self, *args: str, stdin: bytes | None = None, env: dict[str, str] | None = None, bare_dir: bool = True
    ) -> subprocess.CompletedProcess[bytes]:
        argv = ["git", *(["--git-dir", str(self._git_dir)] if bare_dir else []), *args]
        log.debug("running %s", argv)
        try:
            return subprocess.run(
                argv,
                input=stdin,
                capture_output=True,
                env={**self._env, **(env or {})},
                cwd=self._scratch,
                timeout=GIT_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise RepositoryError(
                f"git {args[0]} on {self.url}: no answer within {GIT_TIMEOUT_S} s"
            ) from None

    def _git(
        self, *args: str, stdin: bytes | None = None, env: dict[str, str] | None = None, bare_dir: bool = True
    ) -> bytes:
        result = self._run(*args, stdin=stdin, env=env, bare_dir=bare_dir)
        if result.returncode != 0:
            raise RepositoryError(self._explain(args[0], result.stderr))
        return result.stdout

    def _explain(self, command: str, stderr: bytes) -> str:
        said = scrub(stderr.decode(errors="replace"), self._secrets).strip() or "no message"
        if any(sign in said for sign in _AUTH_FAILURE_SIGNS):
            return (
                f"git {command} on {self.url}: the repository refused the credentials; check the git Secret "
                f"(`token` and `username`, or `ssh-privatekey` and `known_hosts`). git said: {said}"
            )
        return f"git {command} on {self.url} failed: {said}"

    def remote_heads(self, *branches: str) -> RemoteHeads:
        out = self._git("ls-remote", "--symref", self.url, "HEAD", *(f"refs/heads/{b}" for b in branches))
        heads: dict[str, str] = {}
        default = head = None
        for line in out.decode().splitlines():
            value, _, ref = line.partition("\t")
            if value.startswith("ref: ") and ref == "HEAD":
                default = value.removeprefix("ref: ").removeprefix("refs/heads/")
            elif ref == "HEAD":
                head = value
            elif ref.startswith("refs/heads/"):
                heads[ref.removeprefix("refs/heads/")] = value
        if default is not None and head is not None:
            heads.setdefault(default, head)
        return RemoteHeads(heads, default)

    def fetch(self, branch: str) -> None:
        self._git(
            "fetch", "--quiet", "--no-tags", self.url, f"+refs/heads/{branch}:refs/remotes/origin/{branch}"
        )

    def files(self, commit: str, prefix: str) -> dict[str, str]:
        """Path -> blob of every file under `prefix` ("" for all) at `commit`."""
        out = self._git("ls-tree", "-r", "-z", "--full-tree", commit, *([prefix] if prefix else []))
        entries = {}
        for entry in out.split(b"\0"):
            if entry:
                meta, _, path = entry.decode().partition("\t")
                entries[path] = meta.split()[2]
        return entries

    def blob(self, blob: str) -> bytes:
        return self._git("cat-file", "blob", blob)

    def log(self, commit: str, path: str, pretty: str) -> list[str]:
        """One formatted entry per commit reachable from `commit` that changed `path`, newest first."""
        out = self._git("log", f"--format={pretty}%x1e", commit, "--", path)
        return [entry.strip("\n") for entry in out.decode().split("\x1e") if entry.strip("\n")]

    def commit(
        self, parent: str | None, changes: dict[str, bytes | None], message: str, author: Author
    ) -> str | None:
        """A commit on `parent` with `changes` (None deletes); None when the tree would not change."""
        index = {"GIT_INDEX_FILE": str(self._scratch / "index")}
        if parent is None:
            self._git("read-tree", "--empty", env=index)
        else:
            self._git("read-tree", parent, env=index)
        lines = []
        for path, content in sorted(changes.items()):
            if content is None:
                lines.append(f"0 {'0' * 40}\t{path}")
            else:
                blob = self._git("hash-object", "-w", "--stdin", stdin=content).decode().strip()
                lines.append(f"100644 {blob}\t{path}")
        self._git("update-index", "--index-info", stdin=("\n".join(lines) + "\n").encode(), env=index)
        tree = self._git("write-tree", env=index).decode().strip()
        if parent is not None and tree == self._git("rev-parse", f"{parent}^{{tree}}").decode().strip():
            return None
        parents = ["-p", parent] if parent is not None else []
        out = self._git(
            "commit-tree", tree, *parents, "-F", "-", stdin=message.encode(), env=author.environment()
        )
        return out.decode().strip()

    def push(self, commit: str, branch: str) -> str | None:
        """Push `commit` to `branch` without force; the server's reason when it refuses, None when it lands."""
        result = self._run("push", "--porcelain", self.url, f"{commit}:refs/heads/{branch}")
        rejected = [
            line for line in result.stdout.decode(errors="replace").splitlines() if line.startswith("!")
        ]
        if rejected:
            # What a hook or a branch protection rule says comes back as "remote: ..." lines.
            remote_said = [
                line.removeprefix("remote:").strip()
                for line in result.stderr.decode(errors="replace").splitlines()
                if line.startswith("remote:") and line.removeprefix("remote:").strip()
            ]
            reason = "; ".join([line.split("\t")[-1] for line in rejected] + remote_said)
            return scrub(reason, self._secrets)
        if result.returncode != 0:
            raise RepositoryError(self._explain("push", result.stderr))
        return None
