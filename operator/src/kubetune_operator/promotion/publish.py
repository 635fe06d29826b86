"""Promote and roll back adapters by committing records to a GitOps repository.

Each attempt reads the branch as it is now, plans the commit on that tip and pushes without
force. A rejected push (another promotion landed first, or a hook refused) is re-planned on the
newer tip after a jittered backoff, a bounded number of times; then it fails loudly so the
promote Job retries. Promotion is idempotent: a branch that already holds a commit for the
EvalRun's UID and adapter, or the same record, gets no second commit.
"""

from __future__ import annotations

import logging
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

from kubetune_operator.promotion import layout
from kubetune_operator.promotion.credentials import GitCredentials
from kubetune_operator.promotion.errors import PromotionRefused, RepositoryError
from kubetune_operator.promotion.forge import Forge, PullRequest
from kubetune_operator.promotion.git import Author, Workspace
from kubetune_operator.promotion.record import PromotionRecord, load_record_yaml, require_passed_gates

log = logging.getLogger(__name__)

DEFAULT_ATTEMPTS = 8
BACKOFF_S = 0.25
MAX_BACKOFF_S = 8.0
TRAILER_KEYS = ("Kubetune-Action", "Kubetune-Adapter", "Kubetune-EvalRun-UID")


@dataclass(frozen=True)
class Target:
    repository: str
    branch: str
    path: str  # inside the repository; "" is its top
    base_branch: str | None = None  # where a missing branch starts; None: the remote's default branch


@dataclass(frozen=True)
class Published:
    target: Target
    commit: str
    created: bool
    record: PromotionRecord
    # Promotion by review: the request that merges `target.branch` into `merge_into`.
    pull_request: PullRequest | None = None
    merge_into: str | None = None

    def summary(self) -> dict[str, object]:
        """The termination summary (contracts §5)."""
        summary: dict[str, object] = {
            "kind": "promotion",
            "repository": self.target.repository,
            "branch": self.target.branch,
            "path": self.target.path or ".",
            "commit": self.commit,
            "created": self.created,
        }
        if self.merge_into is not None:
            summary["baseBranch"] = self.merge_into
        if self.pull_request is not None:
            summary["pullRequest"] = self.pull_request.summary()
        return summary


@dataclass(frozen=True)
class _Existing:
    commit: str
    record: PromotionRecord


@dataclass(frozen=True)
class _Change:
    record: PromotionRecord
    message: str


class _Branch:
    """The target branch as one attempt sees it."""

    def __init__(self, workspace: Workspace, tip: str | None, root: str):
        self._workspace = workspace
        self.tip = tip
        self._root = root

    @cached_property
    def files(self) -> dict[str, str]:
        return {} if self.tip is None else self._workspace.files(self.tip, self._root)

    def _where(self, path: str, commit: str) -> str:
        return f"{path} at {commit[:12]}"

    def records(self) -> dict[str, PromotionRecord]:
        records = {}
        for path, blob in self.files.items():
            name = layout.adapter_of_record_path(self._root, path)
            if name is None:
                continue
            record = load_record_yaml(self._workspace.blob(blob), self._where(path, self.tip))
            if record.adapter.name != name:
                raise PromotionRefused(
                    f"{self._where(path, self.tip)}: names adapter {record.adapter.name!r} but lies under {name!r}"
                )
            records[name] = record
        return records

    def _record_log(self, adapter: str, pretty: str) -> list[str]:
        if self.tip is None:
            return []
        return self._workspace.log(self.tip, layout.record_path(self._root, adapter), pretty)

    def promotion_commit(self, adapter: str, uid: str) -> str | None:
        """The commit that promoted `adapter` from the EvalRun `uid`, if the branch holds one."""
        fields = "%x1f".join(f"%(trailers:key={key},valueonly,separator=%x2C)" for key in TRAILER_KEYS)
        for entry in self._record_log(adapter, f"%H%x1f{fields}"):
            commit, action, name, run_uid = entry.split("\x1f")
            if (action, name, run_uid) == ("promote", adapter, uid):
                return commit
        return None

    def last_change(self, adapter: str) -> str | None:
        commits = self._record_log(adapter, "%H")
        return commits[0] if commits else None

    def history(self, adapter: str) -> list[tuple[str, PromotionRecord]]:
        """Every version of `adapter`'s record with the commit that wrote it, newest first."""
        path = layout.record_path(self._root, adapter)
        versions = []
        for commit in self._record_log(adapter, "%H"):
            blob = self._workspace.files(commit, path).get(path)
            if blob is not None:
                versions.append(
                    (commit, load_record_yaml(self._workspace.blob(blob), self._where(path, commit)))
                )
        return versions


def _start_point(workspace: Workspace, target: Target) -> str | None:
    """Fetch the branch (or the branch it starts from) and return its tip; None in an empty repository."""
    wanted = [target.branch] + ([target.base_branch] if target.base_branch else [])
    heads = workspace.remote_heads(*wanted)
    if target.branch in heads.branches:
        workspace.fetch(target.branch)
        return heads.branches[target.branch]
    base = target.base_branch or heads.default_branch
    if base not in heads.branches:
        if target.base_branch:
            raise PromotionRefused(
                f"--base-branch {target.base_branch}: no such branch in {target.repository}"
            )
        return None
    log.info("branch %s does not exist yet; it starts from %s", target.branch, base)
    workspace.fetch(base)
    return heads.branches[base]


@contextmanager
def _workspace(repository: str, credentials: GitCredentials | None) -> Iterator[Workspace]:
    with tempfile.TemporaryDirectory(prefix="kubetune-git-") as scratch_dir:
        scratch = Path(scratch_dir)
        environment = credentials.environment(repository, scratch) if credentials else {}
        yield Workspace(repository, scratch, environment, credentials.secrets() if credentials else ())


def _publish(
    target: Target,
    plan: Callable[[_Branch], _Existing | _Change],
    *,
    credentials: GitCredentials | None,
    author: Author,
    attempts: int,
) -> Published:
    with _workspace(target.repository, credentials) as workspace:
        return _push_planned(workspace, target, plan, author=author, attempts=attempts)


def _push_planned(
    workspace: Workspace,
    target: Target,
    plan: Callable[[_Branch], _Existing | _Change],
    *,
    author: Author,
    attempts: int,
) -> Published:
    rejection = ""
    for attempt in range(1, attempts + 1):
        branch = _Branch(workspace, _start_point(workspace, target), target.path)
        decision = plan(branch)
        if isinstance(decision, _Existing):
            return Published(target, decision.commit, False, decision.record)
        changes = layout.changes_for(target.path, decision.record, branch.records(), branch.files)
        commit = workspace.commit(branch.tip, changes, decision.message, author)
        if commit is None:
            unchanged_at = branch.last_change(decision.record.adapter.name) or branch.tip
            return Published(target, unchanged_at, False, decision.record)
        rejection = workspace.push(commit, target.branch)
        if rejection is None:
            return Published(target, commit, True, decision.record)
        if attempt < attempts:
            delay = random.uniform(0, min(MAX_BACKOFF_S, BACKOFF_S * 2 ** (attempt - 1)))
            log.warning(
                "push to %s %s rejected (%s); re-applying on the new tip in %.2f s (attempt %d of %d)",
                target.repository,
                target.branch,
                rejection,
                delay,
                attempt + 1,
                attempts,
            )
            time.sleep(delay)
    raise RepositoryError(
        f"push to {target.repository} branch {target.branch} was rejected {attempts} times "
        f"(last: {rejection}); the record is kept and the promotion is retried"
    )


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _trailers(action: str, record: PromotionRecord) -> str:
    run = record.eval_run
    return (
        f"Kubetune-Action: {action}\n"
        f"Kubetune-Adapter: {record.adapter.name}\n"
        f"Kubetune-EvalRun: {run.namespace}/{run.name}\n"
        f"Kubetune-EvalRun-UID: {run.uid}\n"
    )


def _base_line(record: PromotionRecord) -> str:
    merged = len(record.adapter.true_base.merged_adapters)
    chain = f" + {merged} merged adapter{'s' if merged != 1 else ''}" if merged else ""
    return f"Base: {record.adapter.true_base.base_model}{chain}"


def promotion_message(record: PromotionRecord) -> str:
    run = record.eval_run
    gates = "\n".join(f"- passed {gate.describe()}" for gate in run.gates)
    return (
        f"Promote adapter {record.adapter.name} from EvalRun {run.namespace}/{run.name}\n\n"
        f"Adapter: {record.adapter.uri}\n{_base_line(record)}\n"
        f"Candidate {run.candidate} passed {len(run.gates)} of {len(run.gates)} gates:\n{gates}\n\n"
        + _trailers("promote", record)
    )


def _promotion_plan(record: PromotionRecord) -> Callable[[_Branch], _Existing | _Change]:
    def plan(branch: _Branch) -> _Existing | _Change:
        existing = branch.promotion_commit(record.adapter.name, record.eval_run.uid)
        if existing is not None:
            return _Existing(existing, record)
        return _Change(record, promotion_message(record))

    return plan


def _check_promotable(record: PromotionRecord) -> None:
    if record.action != "promote":
        raise PromotionRefused(
            f"the record's action is {record.action!r}; `kubetune promote` takes 'promote' records"
        )
    require_passed_gates(record)


def head_branch(record: PromotionRecord) -> str:
    """The branch a promotion by pull request pushes to: one per adapter and EvalRun (by UID), so a
    retried Job finds its own and an EvalRun re-created under the same name gets a new one."""
    return f"kubetune/promote-{record.adapter.name}-{record.eval_run.uid[:8]}"


def promote(
    record: PromotionRecord,
    target: Target,
    *,
    credentials: GitCredentials | None = None,
    author: Author,
    attempts: int = DEFAULT_ATTEMPTS,
) -> Published:
    """Commit `record` (action promote, gates passed) and the serving fragment it changes."""
    _check_promotable(record)
    return _publish(target, _promotion_plan(record), credentials=credentials, author=author, attempts=attempts)


def promote_by_pull_request(
    record: PromotionRecord,
    target: Target,
    forge: Forge,
    *,
    head: str | None = None,
    credentials: GitCredentials | None = None,
    author: Author,
    attempts: int = DEFAULT_ATTEMPTS,
) -> Published:
    """Commit `record` to a branch of its own (`head`) started from `target.branch`, and open a pull
    request into `target.branch` (or find the one open or merged). Nothing is pushed and no request
    is opened when `target.branch` already holds the promotion (merged, squashed or not)."""
    _check_promotable(record)
    head = head or head_branch(record)
    if head == target.branch:
        raise PromotionRefused(f"--head-branch {head}: the pull request's branch must differ from --branch")
    with _workspace(target.repository, credentials) as workspace:
        landed = _landed(workspace, target, record, author)
        if landed is not None:
            return landed
        into_head = Target(target.repository, head, target.path, base_branch=target.branch)
        published = _push_planned(workspace, into_head, _promotion_plan(record), author=author, attempts=attempts)
    title, _, body = promotion_message(record).partition("\n")
    pull = forge.open(head, target.branch, title, body.strip() + "\n\nOpened by kubetune promote.")
    return replace(published, pull_request=pull, merge_into=target.branch)


def _landed(workspace: Workspace, target: Target, record: PromotionRecord, author: Author) -> Published | None:
    """The promotion as `target.branch` holds it already (its commit, or the record as it would be
    written), or None."""
    heads = workspace.remote_heads(target.branch)
    if target.branch not in heads.branches:
        raise PromotionRefused(
            f"--branch {target.branch}: no such branch in {target.repository} for a pull request to merge into"
        )
    workspace.fetch(target.branch)
    branch = _Branch(workspace, heads.branches[target.branch], target.path)
    existing = branch.promotion_commit(record.adapter.name, record.eval_run.uid)
    if existing is not None:
        return Published(target, existing, False, record)
    changes = layout.changes_for(target.path, record, branch.records(), branch.files)
    if workspace.commit(branch.tip, changes, promotion_message(record), author) is None:
        return Published(target, branch.last_change(record.adapter.name) or branch.tip, False, record)
    return None


def _rollback_change(branch: _Branch, target: Target, adapter: str, reason: str | None) -> _Change:
    history = branch.history(adapter)
    where = f"{target.path or '.'} on {target.repository} branch {target.branch}"
    if not history:
        raise PromotionRefused(f"adapter {adapter!r} was never promoted under {where}")
    current_commit, current = history[0]
    if not current.serves:
        raise PromotionRefused(
            f"adapter {adapter!r} is not served under {where} (withdrawn in {current_commit[:12]}); nothing to roll back"
        )
    run = current.eval_run
    replaced = {"namespace": run.namespace, "name": run.name, "uid": run.uid}
    undone = {run.uid} | {
        record.rollback.replaces.uid for _, record in history if record.rollback is not None
    }
    promotions = [(commit, record) for commit, record in history if record.action == "promote"]
    # Only promotions older than the one that put the current EvalRun in service are candidates.
    served_from = next((i for i, (_, record) in enumerate(promotions) if record.eval_run.uid == run.uid), -1)
    earlier = [
        (commit, record)
        for commit, record in promotions[served_from + 1 :]
        if record.eval_run.uid not in undone
    ]
    note = f"Reason: {_one_line(reason)}\n" if reason else ""
    if not earlier:
        withdrawn = PromotionRecord.model_validate(
            {**current.document(), "action": "withdraw", "rollback": {"replaces": replaced, "reason": reason}}
        )
        message = (
            f"Withdraw adapter {adapter} (EvalRun {run.namespace}/{run.name})\n\n"
            f"No earlier promotion of {adapter} is left to restore, so it is no longer served.\n{note}\n"
            + _trailers("withdraw", withdrawn)
        )
        return _Change(withdrawn, message)
    restored_commit, restored = earlier[0]
    rolled_back = PromotionRecord.model_validate(
        {
            **restored.document(),
            "action": "rollback",
            "rollback": {"replaces": replaced, "restores": restored_commit, "reason": reason},
        }
    )
    back_to = rolled_back.eval_run
    message = (
        f"Roll back adapter {adapter} to EvalRun {back_to.namespace}/{back_to.name}\n\n"
        f"Replaces EvalRun {run.namespace}/{run.name} ({run.uid}); restores the promotion in {restored_commit}.\n"
        f"Adapter: {rolled_back.adapter.uri}\n{_base_line(rolled_back)}\n{note}\n"
        + _trailers("rollback", rolled_back)
    )
    return _Change(rolled_back, message)


def rollback(
    adapter: str,
    target: Target,
    *,
    reason: str | None = None,
    credentials: GitCredentials | None = None,
    author: Author,
    attempts: int = DEFAULT_ATTEMPTS,
) -> Published:
    """Serve `adapter`'s previous promotion again, skipping any already rolled back; with none left,
    withdraw it. Written as a new record and commit, so the history keeps both."""
    return _publish(
        target,
        lambda branch: _rollback_change(branch, target, adapter, reason),
        credentials=credentials,
        author=author,
        attempts=attempts,
    )
