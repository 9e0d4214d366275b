"""Opening a job's pull request through the App's installation token, exactly once."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import datetime, timedelta, tzinfo
from functools import lru_cache

import pytest
import respx

from domain.clients import github_app
from domain.pull_requests import (
    FileChange,
    GitHubRefused,
    GitHubUnavailable,
    PullRequestPlan,
    open_pull_request,
)
from outbox.settings import Settings
from tests.fakes.github import API_URL, FakeGitHub, throwaway_private_key

INSTALLATION = 957387
REPO = "Codertocat/Hello-World"
_app_ids = itertools.count(900_001)


@lru_cache(maxsize=1)
def private_key() -> str:
    return throwaway_private_key()


def app_settings(**overrides: object) -> Settings:
    """An App of its own (fresh id), so no installation token is shared with another test."""
    values: dict[str, object] = {
        "github_app_id": str(next(_app_ids)),
        "github_app_private_key": private_key(),
        "github_api_url": API_URL,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    with respx.mock(assert_all_called=False) as router:
        fake = FakeGitHub(router)
        fake.add_repo(REPO)
        yield fake


def plan(branch: str = "outbox/job-1-abc", **changes: object) -> PullRequestPlan:
    values: dict[str, object] = {
        "installation_id": INSTALLATION,
        "repository": REPO,
        "base_branch": "main",
        "head_branch": branch,
        "title": "Add the linter configuration",
        "body": "Opened by a job.",
        "files": (
            FileChange(".ruff.toml", "line-length = 100\n"),
            FileChange("README.md", None),
        ),
    }
    values.update(changes)
    return PullRequestPlan(**values)  # type: ignore[arg-type]


def test_opens_one_pull_request_with_the_change_set_on_a_new_branch(github: FakeGitHub) -> None:
    opened = open_pull_request(github_app(app_settings()), plan())

    assert (opened.number, opened.reused) == (1, False)
    assert opened.url == f"https://github.test/{REPO}/pull/1"
    [pull] = github.pulls(REPO)
    assert (pull["head"]["ref"], pull["base"]["ref"]) == ("outbox/job-1-abc", "main")
    assert pull["title"] == "Add the linter configuration"
    files = github.files_on(REPO, "outbox/job-1-abc")
    assert files == {".ruff.toml": github.blob_sha("line-length = 100\n")}  # README deleted
    assert github.files_on(REPO, "main") != files


def test_two_calls_mint_one_installation_token(github: FakeGitHub) -> None:
    app = github_app(app_settings())
    open_pull_request(app, plan("outbox/job-1-a"))
    open_pull_request(app, plan("outbox/job-2-b"))

    assert github.tokens_minted == [INSTALLATION]
    assert len(github.pulls(REPO)) == 2


def test_an_expired_installation_token_is_minted_again(
    github: FakeGitHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    import githubkit.cache.mem_cache as mem_cache

    app = github_app(app_settings())
    open_pull_request(app, plan("outbox/job-1-a"))

    class TwoHoursLater(datetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> datetime:  # type: ignore[override]
            return datetime.now(tz) + timedelta(hours=2)

    monkeypatch.setattr(mem_cache, "datetime", TwoHoursLater)  # the token lives one hour
    open_pull_request(app, plan("outbox/job-2-b"))

    assert github.tokens_minted == [INSTALLATION, INSTALLATION]


def test_a_second_run_finds_the_pull_request_instead_of_opening_another(
    github: FakeGitHub,
) -> None:
    app = github_app(app_settings())
    first = open_pull_request(app, plan())
    again = open_pull_request(app, plan())

    assert (again.number, again.reused) == (first.number, True)
    assert len(github.pulls(REPO)) == 1
    assert github.count("POST", "/git/commits") == 1


def test_a_closed_pull_request_from_the_branch_still_counts_as_the_jobs(
    github: FakeGitHub,
) -> None:
    app = github_app(app_settings())
    open_pull_request(app, plan())
    github.pulls(REPO)[0]["state"] = "closed"

    again = open_pull_request(app, plan())

    assert again.reused and len(github.pulls(REPO)) == 1


def test_pull_request_stored_but_answered_500_is_found_by_the_retry(github: FakeGitHub) -> None:
    app = github_app(app_settings())
    github.fail("POST", "/pulls", status=500, store=True)

    with pytest.raises(GitHubUnavailable, match="HTTP 500"):
        open_pull_request(app, plan())
    retried = open_pull_request(app, plan())

    assert retried.reused and len(github.pulls(REPO)) == 1
    assert github.count("POST", "/git/commits") == 1  # the branch was reused, not rebuilt


def test_422_already_exists_is_looked_up_not_failed(github: FakeGitHub) -> None:
    app = github_app(app_settings())
    open_pull_request(app, plan())
    # The search misses it once (GitHub's search lags), so the create answers 422.
    github.fail("GET", "/pulls", status=200, body=[])

    again = open_pull_request(app, plan())

    assert again.reused and again.number == 1
    assert github.count("POST", "/pulls") == 2
    assert len(github.pulls(REPO)) == 1


def test_an_existing_branch_is_reused(github: FakeGitHub) -> None:
    app = github_app(app_settings())
    github.fail("POST", "/pulls", status=502, store=False)
    with pytest.raises(GitHubUnavailable):
        open_pull_request(app, plan())
    assert "outbox/job-1-abc" in github.repos[REPO.lower()].branches

    opened = open_pull_request(app, plan())

    assert not opened.reused
    assert github.count("POST", "/git/refs") == 1
    assert github.count("POST", "/git/trees") == 1


@pytest.mark.parametrize("status", [403, 429])
def test_rate_limit_is_unavailable_with_githubs_wait(github: FakeGitHub, status: int) -> None:
    github.fail(
        "GET",
        "/pulls",
        status=status,
        headers={"x-ratelimit-remaining": "0", "retry-after": "120"},
        body={"message": "API rate limit exceeded"},
    )
    with pytest.raises(GitHubUnavailable, match="rate limit") as raised:
        open_pull_request(github_app(app_settings()), plan())
    assert raised.value.retry_after == timedelta(seconds=120)
    assert github.pulls(REPO) == []


def test_5xx_is_unavailable(github: FakeGitHub) -> None:
    github.fail("POST", "/git/trees", status=503)
    with pytest.raises(GitHubUnavailable, match="HTTP 503 while creating the tree"):
        open_pull_request(github_app(app_settings()), plan())


@pytest.mark.parametrize("status", [403, 404])
def test_no_access_to_the_repository_is_refused_with_a_clear_reason(
    github: FakeGitHub, status: int
) -> None:
    github.fail(
        "GET", "/pulls", status=status, body={"message": "Resource not accessible by integration"}
    )
    with pytest.raises(GitHubRefused, match=f"{REPO} is not accessible to the App") as raised:
        open_pull_request(github_app(app_settings()), plan())
    assert raised.value.status == status


def test_unknown_repository_is_refused(github: FakeGitHub) -> None:
    with pytest.raises(GitHubRefused, match="Codertocat/Gone is not accessible"):
        open_pull_request(github_app(app_settings()), plan(repository="Codertocat/Gone"))


def test_missing_base_branch_is_refused(github: FakeGitHub) -> None:
    with pytest.raises(GitHubRefused, match="base branch develop not found"):
        open_pull_request(github_app(app_settings()), plan(base_branch="develop"))


def test_uninstalled_app_cannot_get_a_token(github: FakeGitHub) -> None:
    github.fail("POST", "/access_tokens", status=404, body={"message": "Not Found"})
    with pytest.raises(GitHubRefused, match="cannot get a token"):
        open_pull_request(github_app(app_settings()), plan())


def test_deleting_a_file_the_base_lacks_is_refused(github: FakeGitHub) -> None:
    with pytest.raises(GitHubRefused, match="HTTP 422 while creating the tree"):
        open_pull_request(github_app(app_settings()), plan(files=(FileChange("nope.txt", None),)))


def test_network_error_is_unavailable() -> None:
    import httpx

    with respx.mock() as router:
        router.route().mock(side_effect=httpx.ConnectError("connection refused"))
        with pytest.raises(GitHubUnavailable, match="network error"):
            open_pull_request(github_app(app_settings()), plan())


def test_an_empty_base_branch_means_the_repositorys_default_branch(github: FakeGitHub) -> None:
    github.add_repo("Codertocat/Space", branch="trunk")
    opened = open_pull_request(
        github_app(app_settings()), plan(repository="Codertocat/Space", base_branch="")
    )
    [pull] = github.pulls("Codertocat/Space")
    assert (opened.number, pull["base"]["ref"]) == (1, "trunk")
