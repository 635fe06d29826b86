"""Pull (merge) requests on the git host, for promotion by review: GitHub, GitLab and Gitea behind one
small interface.

A promotion by pull request pushes its commit to a branch of its own and asks the forge to merge
it into the target branch. `find` returns the request already open (or merged) for that pair of
branches, so a retried promote Job reuses it; `open` creates one. Both speak the forge's REST API
with the token of the git Secret, over the standard library's HTTP client; the token goes only
into the request's header and is scrubbed from every message.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, ClassVar

from kubetune_operator.promotion.credentials import scrub
from kubetune_operator.promotion.errors import PromotionRefused, RepositoryError

PROVIDERS = ("github", "gitlab", "gitea")
TIMEOUT_S = 60
# Gitea cannot filter its list by branch: this many pages of the newest requests are searched.
GITEA_PAGES = 20
GITEA_PAGE_SIZE = 50
_SCP_LIKE = re.compile(r"^(?:[^@/:]+@)?(?P<host>[^/:]+):(?!//)(?P<path>.+)$")


@dataclass(frozen=True)
class PullRequest:
    number: int
    url: str
    state: str  # open | merged | closed
    created: bool = False  # opened by this promotion (not found already there)

    def summary(self) -> dict[str, Any]:
        return {"number": self.number, "url": self.url, "state": self.state, "created": self.created}


@dataclass(frozen=True)
class Repository:
    """Where the repository lives on its forge: the host (with scheme and port, for the default API
    root) and its path (`owner/name`, or `group/subgroup/name` on GitLab)."""

    origin: str  # https://host[:port]
    host: str
    path: str


def repository_of(url: str) -> Repository:
    """The forge's view of a git URL: https://host/owner/name(.git), ssh://git@host/owner/name.git or
    git@host:owner/name.git."""
    if "://" in url:
        parts = urllib.parse.urlsplit(url)
        scheme = parts.scheme if parts.scheme in ("http", "https") else "https"
        host = parts.hostname or ""
        origin = f"{scheme}://{parts.netloc.rsplit('@', 1)[-1]}" if scheme == parts.scheme else f"https://{host}"
        path = parts.path
    else:
        match = _SCP_LIKE.match(url)
        if match is None:
            raise PromotionRefused(f"--repo {url}: not a URL of a repository on a forge")
        host, path = match.group("host"), match.group("path")
        origin = f"https://{host}"
    path = path.strip("/").removesuffix(".git")
    if not host or path.count("/") < 1:
        raise PromotionRefused(f"--repo {url}: a pull request needs a repository URL with an owner and a name")
    return Repository(origin, host, path)


class Forge:
    """The two calls a promotion makes, over one REST API."""

    provider: ClassVar[str]

    def __init__(self, repository: Repository, api_url: str | None, token: str):
        self.repository = repository
        self.api_url = (api_url or self.default_api_url(repository)).rstrip("/")
        self._token = token

    @staticmethod
    def default_api_url(repository: Repository) -> str:
        raise NotImplementedError

    def headers(self) -> dict[str, str]:
        raise NotImplementedError

    def find(self, head: str, base: str) -> PullRequest | None:
        """The request from `head` into `base`: an open one, else a merged one; None when there is neither."""
        raise NotImplementedError

    def create(self, head: str, base: str, title: str, body: str) -> PullRequest | None:
        """A new request; None when the forge answers that one exists already (a race with another try)."""
        raise NotImplementedError

    def open(self, head: str, base: str, title: str, body: str) -> PullRequest:
        """The request from `head` into `base`: the one there, or a new one."""
        found = self.find(head, base)
        if found is not None:
            return found
        created = self.create(head, base, title, body)
        if created is not None:
            return PullRequest(created.number, created.url, created.state, created=True)
        found = self.find(head, base)
        if found is None:
            raise RepositoryError(f"{self.provider} said a pull request from {head} into {base} exists but lists none")
        return found

    # --- HTTP --------------------------------------------------------------------------------------

    def request(self, method: str, path: str, query: dict[str, Any] | None = None,
                body: dict[str, Any] | None = None, exists: int | None = None) -> Any:
        """The JSON answer; None when the forge answers `exists` with "already exists"."""
        url = f"{self.api_url}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Accept": "application/json", "User-Agent": "kubetune", **self.headers()}
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            said = self._said(exc.read())
            if exc.code == exists and "already exist" in said.lower():
                return None
            raise self._error(method, url, exc.code, said) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise RepositoryError(self._scrub(f"{self.provider} API {method} {url}: {exc}")) from None

    def _scrub(self, text: str) -> str:
        return scrub(text, (self._token,))

    def _said(self, answer: bytes) -> str:
        """What an error answer says: its message (GitHub, Gitea), error (GitLab) or the body, scrubbed."""
        said = answer.decode(errors="replace")
        try:
            parsed = json.loads(said)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            # GitHub puts the reason of a 422 into errors[].message.
            details = [e.get("message") for e in parsed.get("errors") or [] if isinstance(e, dict) and e.get("message")]
            said = "; ".join([str(parsed.get("message") or parsed.get("error") or parsed), *details])
        return self._scrub(" ".join(said.split())[:500])

    def _error(self, method: str, url: str, code: int, said: str) -> Exception:
        where = f"{self.provider} API {method} {url} answered {code}"
        if code in (401, 403):
            return RepositoryError(f"{where}: the forge refused the token; check `token` in the git Secret "
                                   f"and that it may open pull requests on {self.repository.path}. It said: {said}")
        if code == 404:
            return RepositoryError(f"{where}: no repository {self.repository.path} there, or the token may not see "
                                   f"it (check pullRequest.apiUrl). It said: {said}")
        if code in (400, 409, 422):
            return PromotionRefused(f"{where}: {said}")
        return RepositoryError(f"{where}: {said}")


def _quoted(path: str) -> str:
    return "/".join(urllib.parse.quote(part, safe="") for part in path.split("/"))


class GitHub(Forge):
    provider = "github"

    @staticmethod
    def default_api_url(repository: Repository) -> str:
        if repository.host == "github.com":
            return "https://api.github.com"
        return f"{repository.origin}/api/v3"  # GitHub Enterprise Server

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}", "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28"}

    def _pulls(self) -> str:
        return f"/repos/{_quoted(self.repository.path)}/pulls"

    @staticmethod
    def _pull(answer: dict[str, Any]) -> PullRequest:
        state = "merged" if answer.get("merged_at") else str(answer.get("state"))
        return PullRequest(int(answer["number"]), str(answer["html_url"]), state)

    def find(self, head: str, base: str) -> PullRequest | None:
        owner = self.repository.path.split("/", 1)[0]
        answer = self.request("GET", self._pulls(),
                              {"head": f"{owner}:{head}", "base": base, "state": "all", "per_page": 30})
        return _pick([self._pull(a) for a in answer or []])

    def create(self, head: str, base: str, title: str, body: str) -> PullRequest | None:
        # 422 "A pull request already exists for ..." is the race with another try.
        answer = self.request("POST", self._pulls(), exists=422,
                              body={"title": title, "head": head, "base": base, "body": body})
        return None if answer is None else self._pull(answer)


class GitLab(Forge):
    provider = "gitlab"

    @staticmethod
    def default_api_url(repository: Repository) -> str:
        return f"{repository.origin}/api/v4"

    def headers(self) -> dict[str, str]:
        return {"PRIVATE-TOKEN": self._token}

    def _merge_requests(self) -> str:
        return f"/projects/{urllib.parse.quote(self.repository.path, safe='')}/merge_requests"

    @staticmethod
    def _pull(answer: dict[str, Any]) -> PullRequest:
        state = {"opened": "open", "locked": "open"}.get(str(answer.get("state")), str(answer.get("state")))
        return PullRequest(int(answer["iid"]), str(answer["web_url"]), state)

    def find(self, head: str, base: str) -> PullRequest | None:
        answer = self.request("GET", self._merge_requests(),
                              {"source_branch": head, "target_branch": base, "per_page": 30})
        return _pick([self._pull(a) for a in answer or []])

    def create(self, head: str, base: str, title: str, body: str) -> PullRequest | None:
        # 409: "Another open merge request already exists for this source branch".
        answer = self.request("POST", self._merge_requests(), exists=409, body={
            "source_branch": head, "target_branch": base, "title": title, "description": body,
            "remove_source_branch": True})
        return None if answer is None else self._pull(answer)


class Gitea(Forge):
    provider = "gitea"

    @staticmethod
    def default_api_url(repository: Repository) -> str:
        return f"{repository.origin}/api/v1"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self._token}"}

    def _pulls(self) -> str:
        return f"/repos/{_quoted(self.repository.path)}/pulls"

    @staticmethod
    def _pull(answer: dict[str, Any]) -> PullRequest:
        state = "merged" if answer.get("merged") else str(answer.get("state"))
        return PullRequest(int(answer["number"]), str(answer["html_url"]), state)

    def find(self, head: str, base: str) -> PullRequest | None:
        found = []
        for page in range(1, GITEA_PAGES + 1):
            answer = self.request("GET", self._pulls(), {"state": "all", "sort": "newest", "page": page,
                                                          "limit": GITEA_PAGE_SIZE}) or []
            found += [self._pull(a) for a in answer
                      if (a.get("head") or {}).get("ref") == head and (a.get("base") or {}).get("ref") == base]
            if len(answer) < GITEA_PAGE_SIZE:
                break
        return _pick(found)

    def create(self, head: str, base: str, title: str, body: str) -> PullRequest | None:
        # 409: "pull request already exists for these targets".
        answer = self.request("POST", self._pulls(), exists=409,
                              body={"title": title, "head": head, "base": base, "body": body})
        return None if answer is None else self._pull(answer)


def _pick(found: list[PullRequest]) -> PullRequest | None:
    """An open request, else a merged one (the promotion is done); closed ones were turned down."""
    for state in ("open", "merged"):
        for pull in found:
            if pull.state == state:
                return pull
    return None


FORGES: dict[str, type[Forge]] = {forge.provider: forge for forge in (GitHub, GitLab, Gitea)}


def forge(provider: str, repository_url: str, api_url: str | None, token: str | None) -> Forge:
    if provider not in FORGES:
        raise PromotionRefused(f"--pull-request {provider!r}: one of {', '.join(PROVIDERS)}")
    if not token:
        raise PromotionRefused("--pull-request needs a token (`token` in --credentials-dir) to call the forge's API")
    if api_url is not None and not re.match(r"^https?://[^\s/?#]+(/[^\s?#]*)?$", api_url):
        raise PromotionRefused(f"--api-url {api_url!r}: must be an http(s) URL of the forge's API root")
    return FORGES[provider](repository_of(repository_url), api_url, token)
