"""Opening a job's pull request on GitHub, exactly once, through the installation's token.

The steps, each safe to repeat after a crash at any line:
1. look for a pull request from the job's head branch (any state): found, it is the job's;
2. look for the head branch: found, it already carries the job's commit (it is created last);
   otherwise read the base branch's head, create the blobs, the tree and the commit through
   the Git data API, and create the head branch on that commit;
3. open the pull request; GitHub's 422 "A pull request already exists" means an earlier
   attempt opened it (GitHub stored it but the answer was lost): look it up again.

GitHub's answers are classified once, here: rate limits (403/429 with rate-limit headers),
5xx and network errors are `GitHubUnavailable` (the processors retry per their policy);
404/403 on the repository and other refusals are `GitHubRefused` (the job fails, with the
reason). Only network code lives here; the job's state is the caller's.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from githubkit import AppAuthStrategy, GitHub
from githubkit.exception import (
    GitHubException,
    RateLimitExceeded,
    RequestError,
    RequestFailed,
)

FILE_MODE = "100644"  #: a regular, non-executable file in a Git tree
_ERROR_TEXT_CAP = 300  #: characters of GitHub's error message kept in a reason


@dataclass(frozen=True)
class FileChange:
    """One file of a change set: new content, or `content=None` to delete the file."""

    path: str
    content: str | None


@dataclass(frozen=True)
class PullRequestPlan:
    """Everything GitHub needs to open one job's pull request."""

    installation_id: int
    repository: str  #: "owner/name"
    #: The branch to merge into; empty means the repository's default branch.
    base_branch: str
    head_branch: str
    title: str
    body: str
    files: tuple[FileChange, ...]

    @property
    def owner(self) -> str:
        return self.repository.split("/", 1)[0]

    @property
    def name(self) -> str:
        return self.repository.split("/", 1)[1]


@dataclass(frozen=True)
class OpenedPullRequest:
    number: int
    url: str
    #: True when the pull request already existed (an earlier attempt opened it).
    reused: bool


class GitHubUnavailable(Exception):
    """GitHub could not answer now (rate limit, 5xx, network): try again later.

    :param retry_after: GitHub's own wait (rate limits), when it said one.
    """

    def __init__(self, reason: str, retry_after: timedelta | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class GitHubRefused(Exception):
    """GitHub refused for good (no access to the repository, no such branch): the job fails.

    :param status: GitHub's HTTP status, when the refusal was an HTTP answer.
    """

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.status = status


def open_pull_request(app: GitHub[AppAuthStrategy], plan: PullRequestPlan) -> OpenedPullRequest:
    """Open `plan`'s pull request, or find the one an earlier attempt opened."""
    github = app.with_auth(app.auth.as_installation(plan.installation_id))
    existing = _find_pull_request(github, plan)
    if existing is not None:
        return existing
    if not plan.base_branch:
        plan = replace(plan, base_branch=_default_branch(github, plan))
    if _branch_head(github, plan, plan.head_branch) is None:
        commit = _commit_change_set(github, plan)
        _create_branch(github, plan, commit)
    return _create_pull_request(github, plan)


def find_pull_request(
    app: GitHub[AppAuthStrategy], plan: PullRequestPlan
) -> OpenedPullRequest | None:
    """The pull request an earlier attempt opened from the plan's head branch; creates nothing."""
    github = app.with_auth(app.auth.as_installation(plan.installation_id))
    return _find_pull_request(github, plan)


def _default_branch(github: GitHub[Any], plan: PullRequestPlan) -> str:
    with _classified("reading the repository", plan):
        branch = github.rest.repos.get(plan.owner, plan.name).json()["default_branch"]
    if not isinstance(branch, str) or not branch:
        raise GitHubRefused(f"repository {plan.repository} has no default branch (empty?)")
    return branch


def _find_pull_request(github: GitHub[Any], plan: PullRequestPlan) -> OpenedPullRequest | None:
    with _classified("looking for an existing pull request", plan):
        response = github.rest.pulls.list(
            plan.owner,
            plan.name,
            state="all",
            head=f"{plan.owner}:{plan.head_branch}",
            per_page=10,
        )
    pulls = response.json()
    if not isinstance(pulls, list):
        raise GitHubUnavailable("GitHub answered the pull request search with something else")
    for pull in pulls:
        if isinstance(pull, dict) and (pull.get("head") or {}).get("ref") == plan.head_branch:
            return OpenedPullRequest(int(pull["number"]), str(pull.get("html_url")), True)
    return None


def _branch_head(github: GitHub[Any], plan: PullRequestPlan, branch: str) -> str | None:
    """The commit sha a branch points at, or None when the branch does not exist."""
    try:
        with _classified(f"reading branch {branch}", plan):
            response = github.rest.git.get_ref(plan.owner, plan.name, f"heads/{branch}")
    except GitHubRefused as refused:
        # The repository answered the search just before, so a 404 here is the branch's.
        if refused.status == 404:
            return None
        raise
    ref: Any = response.json()
    sha = (ref.get("object") or {}).get("sha") if isinstance(ref, dict) else None
    if not isinstance(sha, str):
        # A partial name matches several refs and GitHub lists them; ours is not among them.
        return None
    return sha


def _commit_change_set(github: GitHub[Any], plan: PullRequestPlan) -> str:
    """One commit on top of the base branch's head with the change set; returns its sha."""
    base_sha = _branch_head(github, plan, plan.base_branch)
    if base_sha is None:
        raise GitHubRefused(f"base branch {plan.base_branch} not found in {plan.repository}")
    with _classified("reading the base commit", plan):
        base_tree = github.rest.git.get_commit(plan.owner, plan.name, base_sha).json()["tree"][
            "sha"
        ]
    entries: list[Any] = []
    for change in plan.files:
        entry: dict[str, Any] = {"path": change.path, "mode": FILE_MODE, "type": "blob"}
        if change.content is None:
            entry["sha"] = None  # a null sha deletes the path from the base tree
        else:
            with _classified(f"creating the blob for {change.path}", plan):
                blob = github.rest.git.create_blob(
                    plan.owner, plan.name, content=change.content, encoding="utf-8"
                )
            entry["sha"] = blob.json()["sha"]
        entries.append(entry)
    with _classified("creating the tree", plan):
        tree = github.rest.git.create_tree(
            plan.owner, plan.name, tree=entries, base_tree=base_tree
        ).json()["sha"]
    with _classified("creating the commit", plan):
        commit = github.rest.git.create_commit(
            plan.owner, plan.name, message=plan.title, tree=tree, parents=[base_sha]
        ).json()["sha"]
    return str(commit)


def _create_branch(github: GitHub[Any], plan: PullRequestPlan, commit: str) -> None:
    try:
        with _classified(f"creating branch {plan.head_branch}", plan):
            github.rest.git.create_ref(
                plan.owner, plan.name, ref=f"refs/heads/{plan.head_branch}", sha=commit
            )
    except GitHubRefused as refused:
        # Another attempt created it between our look and now: it carries that attempt's
        # commit of the same change set, so it is used as it is.
        if "already exists" in str(refused):
            return
        raise


def _create_pull_request(github: GitHub[Any], plan: PullRequestPlan) -> OpenedPullRequest:
    try:
        with _classified("opening the pull request", plan):
            response = github.rest.pulls.create(
                plan.owner,
                plan.name,
                title=plan.title,
                body=plan.body,
                head=plan.head_branch,
                base=plan.base_branch,
            )
    except GitHubRefused as refused:
        if "already exists" not in str(refused):
            raise
        existing = _find_pull_request(github, plan)
        if existing is None:
            raise GitHubUnavailable(
                "GitHub says the pull request exists but does not list it yet"
            ) from refused
        return existing
    pull = response.json()
    return OpenedPullRequest(int(pull["number"]), str(pull.get("html_url")), False)


# --- classifying GitHub's answers ------------------------------------------------------------


@contextmanager
def _classified(step: str, plan: PullRequestPlan) -> Iterator[None]:
    """Turn githubkit's exceptions into GitHubUnavailable or GitHubRefused, naming the step."""
    try:
        yield
    except GitHubException as exc:
        raise _classify(exc, step, plan) from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise GitHubUnavailable(f"unexpected answer from GitHub while {step}: {exc!r}") from exc


def _classify(
    exc: BaseException, step: str, plan: PullRequestPlan
) -> GitHubUnavailable | GitHubRefused:
    if isinstance(exc, RateLimitExceeded):
        return GitHubUnavailable(
            f"GitHub rate limit while {step} (HTTP {exc.response.status_code})",
            retry_after=exc.retry_after,
        )
    if isinstance(exc, RequestFailed):
        return _classify_status(exc, step, plan)
    if isinstance(exc, RequestError):
        # A failure inside the auth flow (minting the installation token) arrives wrapped.
        if isinstance(exc.exc, GitHubException):
            return _classify(exc.exc, step, plan)
        return GitHubUnavailable(f"network error while {step}: {exc.exc!r}"[:500])
    return GitHubUnavailable(f"GitHub client error while {step}: {exc!r}"[:500])


def _classify_status(
    exc: RequestFailed, step: str, plan: PullRequestPlan
) -> GitHubUnavailable | GitHubRefused:
    status = exc.response.status_code
    detail = _error_text(exc)
    if status >= 500 or status in (408, 429):
        return GitHubUnavailable(f"GitHub HTTP {status} while {step}: {detail}")
    if status == 401:
        # The App's JWT or token was refused: a clock or configuration problem that an
        # operator fixes, after which the job should go on.
        return GitHubUnavailable(f"GitHub refused the App's credentials while {step}")
    if status in (403, 404) and exc.request.url.path.endswith("/access_tokens"):
        return GitHubRefused(
            f"installation {plan.installation_id} cannot get a token "
            f"(HTTP {status}: {detail}); the App may have been uninstalled",
            None,  # not the status of the call being made: a 404 here is no missing branch
        )
    if status in (403, 404):
        return GitHubRefused(
            f"repository {plan.repository} is not accessible to the App "
            f"(HTTP {status} while {step}: {detail})",
            status,
        )
    return GitHubRefused(f"GitHub HTTP {status} while {step}: {detail}", status)


def _error_text(exc: RequestFailed) -> str:
    """GitHub's message and validation errors, e.g. 'Validation Failed: A pull request already…'."""
    try:
        body = exc.response.json()
    except ValueError:
        return exc.response.text[:_ERROR_TEXT_CAP]
    if not isinstance(body, dict):
        return str(body)[:_ERROR_TEXT_CAP]
    parts = [str(body.get("message", ""))]
    for error in body.get("errors") or []:
        if isinstance(error, dict):
            parts.append(str(error.get("message") or error.get("code") or ""))
        else:
            parts.append(str(error))
    return ": ".join(p for p in parts if p)[:_ERROR_TEXT_CAP]
