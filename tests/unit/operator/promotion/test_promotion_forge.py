"""Pull requests on GitHub, GitLab and Gitea, against a fake API that checks each request."""

from __future__ import annotations

import pytest

from kubetune_operator.promotion.errors import PromotionRefused, RepositoryError
from kubetune_operator.promotion.forge import PullRequest, forge, repository_of
from tests.unit.operator.promotion.fake_forge import Expect, FakeForge

TOKEN = "glpat-secret-token-value"
REPO = "https://git.example.com/team/gitops.git"
HEAD, BASE = "kubetune/promote-support-dpo-0b6f6a52", "main"
API_ROOT = {"github": "/api/v3", "gitlab": "/api/v4", "gitea": "/api/v1"}
AUTH = {"github": {"Authorization": f"Bearer {TOKEN}", "X-GitHub-Api-Version": "2022-11-28"},
        "gitlab": {"PRIVATE-TOKEN": TOKEN},
        "gitea": {"Authorization": f"token {TOKEN}"}}


def pull(provider: str, number: int, state: str = "open", head: str = HEAD) -> dict:
    """A request as the provider's API describes it."""
    url = f"https://git.example.com/team/gitops/pull/{number}"
    if provider == "github":
        return {"number": number, "html_url": url, "state": "closed" if state == "merged" else state,
                "merged_at": "2026-11-20T10:00:00Z" if state == "merged" else None}
    if provider == "gitlab":
        return {"iid": number, "web_url": url, "state": {"open": "opened"}.get(state, state),
                "source_branch": head, "target_branch": BASE}
    return {"number": number, "html_url": url, "state": "closed" if state == "merged" else state,
            "merged": state == "merged", "head": {"ref": head}, "base": {"ref": BASE}}


def listing(provider: str, answer: list) -> Expect:
    root = API_ROOT[provider]
    if provider == "github":
        return Expect("GET", f"{root}/repos/team/gitops/pulls", answer=answer, headers=AUTH[provider],
                      query={"head": f"team:{HEAD}", "base": BASE, "state": "all", "per_page": "30"})
    if provider == "gitlab":
        return Expect("GET", f"{root}/projects/team%2Fgitops/merge_requests", answer=answer, headers=AUTH[provider],
                      query={"source_branch": HEAD, "target_branch": BASE, "per_page": "30"})
    return Expect("GET", f"{root}/repos/team/gitops/pulls", answer=answer, headers=AUTH[provider],
                  query={"state": "all", "sort": "newest", "page": "1", "limit": "50"})


def creation(provider: str, status: int, answer) -> Expect:
    root = API_ROOT[provider]
    if provider == "gitlab":
        return Expect("POST", f"{root}/projects/team%2Fgitops/merge_requests", status, answer, headers=AUTH[provider],
                      body={"source_branch": HEAD, "target_branch": BASE, "title": "Promote", "description": "why",
                            "remove_source_branch": True})
    return Expect("POST", f"{root}/repos/team/gitops/pulls", status, answer, headers=AUTH[provider],
                  body={"title": "Promote", "head": HEAD, "base": BASE, "body": "why"})


@pytest.fixture
def fake():
    with FakeForge() as server:
        yield server
    assert server.problems == [], server.problems


def host(provider: str, fake: FakeForge):
    return forge(provider, REPO, fake.url + API_ROOT[provider], TOKEN)


PROVIDERS = ["github", "gitlab", "gitea"]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_request_is_opened_when_none_exists(provider, fake):
    fake.expect(listing(provider, []), creation(provider, 201, pull(provider, 7)))
    opened = host(provider, fake).open(HEAD, BASE, "Promote", "why")
    assert opened == PullRequest(7, "https://git.example.com/team/gitops/pull/7", "open", created=True)
    assert fake.script == []


@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_open_request_is_reused_and_a_merged_one_ends_the_promotion(provider, fake):
    # Closed without merging means turned down: a new request is opened beside it.
    fake.expect(listing(provider, [pull(provider, 3, "closed"), pull(provider, 5, "open")]))
    assert host(provider, fake).open(HEAD, BASE, "Promote", "why") == PullRequest(
        5, "https://git.example.com/team/gitops/pull/5", "open")
    fake.expect(listing(provider, [pull(provider, 5, "merged")]))
    assert host(provider, fake).open(HEAD, BASE, "Promote", "why").state == "merged"


@pytest.mark.parametrize("provider", ["github", "gitea"])
def test_gitea_and_github_lists_are_filtered_to_the_branches(provider, fake):
    # GitHub filters on the server; the fake answers as Gitea's unfiltered list would.
    other = pull(provider, 9, "open", head="kubetune/promote-other-11111111")
    if provider == "github":
        fake.expect(listing(provider, []), creation(provider, 201, pull(provider, 10)))
    else:
        fake.expect(listing(provider, [other]), creation(provider, 201, pull(provider, 10)))
    assert host(provider, fake).open(HEAD, BASE, "Promote", "why").number == 10


@pytest.mark.parametrize("provider, status, said", [
    ("github", 422, {"message": "Validation Failed",
                     "errors": [{"message": f"A pull request already exists for team:{HEAD}."}]}),
    ("gitlab", 409, {"message": ["Another open merge request already exists for this source branch: !4"]}),
    ("gitea", 409, {"message": "pull request already exists for these targets [id: 4]"}),
])
def test_a_request_opened_meanwhile_by_another_try_is_found(provider, status, said, fake):
    fake.expect(listing(provider, []), creation(provider, status, said), listing(provider, [pull(provider, 4)]))
    assert host(provider, fake).open(HEAD, BASE, "Promote", "why") == PullRequest(
        4, "https://git.example.com/team/gitops/pull/4", "open")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_refused_token_is_a_retryable_error_that_never_shows_it(provider, fake):
    fake.expect(Expect("GET", listing(provider, []).path, 401, {"message": f"Bad credentials {TOKEN}"}))
    with pytest.raises(RepositoryError) as caught:
        host(provider, fake).open(HEAD, BASE, "Promote", "why")
    assert "refused the token" in str(caught.value) and TOKEN not in str(caught.value)


def test_a_refused_request_names_what_the_forge_said(fake):
    fake.expect(listing("github", []), creation("github", 422, {
        "message": "Validation Failed", "errors": [{"message": "base: main does not exist"}]}))
    with pytest.raises(PromotionRefused, match="base: main does not exist"):
        host("github", fake).open(HEAD, BASE, "Promote", "why")


@pytest.mark.parametrize("url, origin, path", [
    ("https://github.com/team/gitops.git", "https://github.com", "team/gitops"),
    ("https://git.example.com:8443/group/sub/gitops", "https://git.example.com:8443", "group/sub/gitops"),
    ("git@gitlab.com:group/gitops.git", "https://gitlab.com", "group/gitops"),
    ("ssh://git@git.example.com:2222/team/gitops.git", "https://git.example.com", "team/gitops"),
])
def test_the_repository_and_api_root_come_from_the_git_url(url, origin, path):
    repository = repository_of(url)
    assert (repository.origin, repository.path) == (origin, path)
    api = {p: forge(p, url, None, TOKEN).api_url for p in PROVIDERS}
    assert api["github"] == ("https://api.github.com" if "github.com" in url else f"{origin}/api/v3")
    assert (api["gitlab"], api["gitea"]) == (f"{origin}/api/v4", f"{origin}/api/v1")


@pytest.mark.parametrize("provider, url, api_url, token, said", [
    ("bitbucket", REPO, None, TOKEN, "one of github, gitlab, gitea"),
    ("github", REPO, None, None, "needs a token"),
    ("github", "https://git.example.com/gitops.git", None, TOKEN, "an owner and a name"),
    ("github", REPO, "ftp://api", TOKEN, "--api-url"),
])
def test_what_a_pull_request_cannot_use_is_refused(provider, url, api_url, token, said):
    with pytest.raises(PromotionRefused, match=said):
        forge(provider, url, api_url, token)
