"""`kubetune promote` and `kubetune rollback`: commit a promotion record to a GitOps repository.

The promote Job runs `kubetune promote --record /etc/kubetune/record/record.json ...` (contracts §1);
people run both by hand with the same record format. Either prints one line and writes the
termination summary (contracts §5).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from kubetune_operator.errors import UserError
from kubetune_operator.exitcodes import reason
from kubetune_operator.promotion.credentials import GitCredentials, url_password_free
from kubetune_operator.promotion.errors import PromotionRefused
from kubetune_operator.promotion.forge import PROVIDERS, forge
from kubetune_operator.promotion.git import Author, check_branch_name
from kubetune_operator.promotion.publish import (
    DEFAULT_ATTEMPTS,
    Published,
    Target,
    promote,
    promote_by_pull_request,
    rollback,
)
from kubetune_operator.promotion.record import ADAPTER_NAME_PATTERN, load_record
from kubetune_operator.promotion.termination import write_termination_summary

DEFAULT_AUTHOR = "kubetune <kubetune@noreply.invalid>"
_AUTHOR = re.compile(r"^\s*([^<>]*[^<>\s])\s*<([^<>\s]+@[^<>\s]+)>\s*$")


def _add_target_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--repo", required=True, help="the GitOps repository (https://, ssh://, user@host:path, file://)"
    )
    parser.add_argument(
        "--branch", required=True, help="branch to commit to; a review branch is created if missing"
    )
    parser.add_argument(
        "--path", required=True, help="directory inside the repository that kubetune owns ('.' = top)"
    )
    parser.add_argument(
        "--base-branch", help="where a missing --branch starts (default: the repository's default branch)"
    )
    parser.add_argument(
        "--author", default=DEFAULT_AUTHOR, help=f"commit author, 'Name <email>' (default {DEFAULT_AUTHOR!r})"
    )
    parser.add_argument(
        "--credentials-dir",
        type=Path,
        help="a mounted git Secret: `token` (+ optional `username`) for HTTPS, or `ssh-privatekey` (+ `known_hosts`)",
    )
    parser.add_argument(
        "--attempts",
        type=int,
        default=DEFAULT_ATTEMPTS,
        help=f"pushes to try when others land first (default {DEFAULT_ATTEMPTS})",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    promote_parser = subparsers.add_parser(
        "promote",
        help="commit an adapter's promotion record and vLLM multi-LoRA fragment to a GitOps repository",
        description="Commit a promotion record (record.json from the operator, or one written by hand) and the "
        "vLLM multi-LoRA serving fragment derived from it. Refuses a record whose gates did not pass; "
        "makes no second commit for the same EvalRun.",
    )
    promote_parser.add_argument("--record", required=True, type=Path, help="the promotion record (JSON)")
    _add_target_arguments(promote_parser)
    review = promote_parser.add_argument_group(
        "promotion by pull request",
        "commit to a branch of its own, started from --branch, and open a pull (merge) request into --branch "
        "through the forge's API with `token` from --credentials-dir; nothing is pushed when --branch holds "
        "the promotion already",
    )
    review.add_argument("--pull-request", choices=PROVIDERS, help="the forge: github (and GitHub Enterprise), "
                        "gitlab, gitea (and Forgejo)")
    review.add_argument("--api-url", help="the forge's API root (default: from --repo: https://api.github.com for "
                        "github.com, https://HOST/api/v3, /api/v4 or /api/v1)")
    review.add_argument("--head-branch", help="the branch to push to (default: kubetune/promote-ADAPTER-UID8)")
    promote_parser.set_defaults(func=run_promote)

    rollback_parser = subparsers.add_parser(
        "rollback",
        help="serve an adapter's previous promotion again (or withdraw it), as a new commit",
        description="Write a record that restores the adapter's previous promotion, skipping any already rolled "
        "back; with none left, withdraw the adapter from serving. The history keeps every step.",
    )
    rollback_parser.add_argument(
        "--adapter", required=True, help="the adapter's name (its served model name)"
    )
    rollback_parser.add_argument("--reason", help="why, recorded in the record and the commit message")
    _add_target_arguments(rollback_parser)
    rollback_parser.set_defaults(func=run_rollback)


def _author(text: str) -> Author:
    match = _AUTHOR.match(text)
    if match is None:
        raise PromotionRefused(f"--author {text!r}: must look like 'Name <email@example.com>'")
    return Author(match.group(1), match.group(2))


def _repository_path(text: str) -> str:
    path = PurePosixPath(text)
    if path.is_absolute() or ".." in path.parts or ".git" in path.parts or not text.strip():
        raise PromotionRefused(
            f"--path {text!r}: must be a relative directory inside the repository, without '..'"
        )
    if not text.isprintable():
        raise PromotionRefused(f"--path {text!r}: must not contain control characters such as a newline")
    return "" if str(path) == "." else str(path)


def _repository(text: str) -> str:
    url = url_password_free(text)
    # git would read it as an option: --upload-pack=<command> runs the command.
    if url.startswith("-"):
        raise PromotionRefused(f"--repo {url!r}: a repository URL or path cannot start with '-'")
    return url


def _target(args: argparse.Namespace) -> Target:
    if args.attempts < 1:
        raise PromotionRefused(f"--attempts {args.attempts}: must be at least 1")
    return Target(
        repository=_repository(args.repo),
        branch=check_branch_name(args.branch, "--branch"),
        path=_repository_path(args.path),
        base_branch=check_branch_name(args.base_branch, "--base-branch") if args.base_branch else None,
    )


def _credentials(args: argparse.Namespace) -> GitCredentials | None:
    return GitCredentials.from_directory(args.credentials_dir) if args.credentials_dir else None


def _report(publish: Callable[[], Published], describe: Callable[[Published], str]) -> int:
    try:
        published = publish()
    except UserError as exc:
        write_termination_summary({"kind": "promotion", "error": str(exc), "reason": reason(exc.exit_code)})
        raise
    except Exception as exc:
        write_termination_summary(
            {"kind": "promotion", "error": f"{exc.__class__.__name__}: {exc}", "reason": reason(1)}
        )
        raise
    write_termination_summary(published.summary())
    print(describe(published))
    return 0


def _where(published: Published) -> str:
    target = published.target
    return f"{target.repository} branch {target.branch} path {target.path or '.'}"


def run_promote(args: argparse.Namespace) -> int:
    def publish() -> Published:
        target, author, credentials = _target(args), _author(args.author), _credentials(args)
        record = load_record(args.record)
        if args.pull_request is None:
            if args.api_url or args.head_branch:
                raise PromotionRefused("--api-url and --head-branch apply to --pull-request only")
            return promote(record, target, credentials=credentials, author=author, attempts=args.attempts)
        if args.head_branch:
            check_branch_name(args.head_branch, "--head-branch")
        host = forge(args.pull_request, target.repository, args.api_url, credentials.token if credentials else None)
        return promote_by_pull_request(record, target, host, head=args.head_branch, credentials=credentials,
                                       author=author, attempts=args.attempts)

    def describe(published: Published) -> str:
        record, run = published.record, published.record.eval_run
        pull = published.pull_request
        if pull is not None:
            opened = "opened" if pull.created else f"found ({pull.state})"
            return (f"promoted {record.adapter.name} (EvalRun {run.namespace}/{run.name}) to {_where(published)}: "
                    f"commit {published.commit}; pull request #{pull.number} into {published.merge_into} "
                    f"{opened}: {pull.url}")
        if published.created:
            return f"promoted {record.adapter.name} (EvalRun {run.namespace}/{run.name}) to {_where(published)}: commit {published.commit}"
        # Not "is promoted": a rollback since then stays, so the adapter may serve another EvalRun now.
        return (
            f"{record.adapter.name} was promoted from EvalRun {run.namespace}/{run.name} in "
            f"{_where(published)} before: commit {published.commit}; nothing to do "
            "(an EvalRun is promoted once; later rollbacks stay)"
        )

    return _report(publish, describe)


def run_rollback(args: argparse.Namespace) -> int:
    def publish() -> Published:
        if not re.match(ADAPTER_NAME_PATTERN, args.adapter):
            raise PromotionRefused(
                f"--adapter {args.adapter!r}: not an adapter name (lowercase letters, digits, '-', '.')"
            )
        target = _target(args)
        return rollback(
            args.adapter,
            target,
            reason=args.reason,
            credentials=_credentials(args),
            author=_author(args.author),
            attempts=args.attempts,
        )

    def describe(published: Published) -> str:
        record, run = published.record, published.record.eval_run
        if record.action == "withdraw":
            return f"withdrew {record.adapter.name} from serving in {_where(published)}: commit {published.commit}"
        return (
            f"rolled back {record.adapter.name} to EvalRun {run.namespace}/{run.name} in "
            f"{_where(published)}: commit {published.commit}"
        )

    return _report(publish, describe)
