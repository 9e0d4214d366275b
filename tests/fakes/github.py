"""GitHub's REST API held in memory: what PR jobs, installations and reconciliation call.

One fake for every test: mounted on a respx router (`FakeGitHub(router)`) for code running
in the test's process, or served over HTTP by `tests.fakes.providers.FakeProviders` for
worker processes.

It keeps repositories' branches, Git objects and pull requests, so a test can check what
exists after a run (one pull request, one branch), count the tokens minted, and make any
call fail: `fail("POST", "/pulls", status=500, store=True)` answers 500 *after* storing the
pull request, as GitHub sometimes does (tests/fakes/faults.py). `suspend(installation)`
blocks an installation as GitHub does: no new token, and its tokens already minted are
refused. `hooks` holds the App's webhook deliveries (listed, and redelivered on request).
"""

from __future__ import annotations

import collections
import copy
import hashlib
import itertools
import json
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import respx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.conftest import CORPUS
from tests.fakes.faults import Faults, InjectsFaults

API_URL = "https://api.github.test"
_PULL_TEMPLATE: dict[str, Any] = json.loads(
    (CORPUS / "github" / "pull_request" / "opened.payload.json").read_text()
)["pull_request"]


def throwaway_private_key() -> str:
    """A fresh RSA key in PEM, for the App's JWT (nothing checks it but the shape)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@dataclass
class Repo:
    full_name: str
    default_branch: str = "main"
    branches: dict[str, str] = field(default_factory=dict)
    pulls: list[dict[str, Any]] = field(default_factory=list)
    trees: dict[str, dict[str, str | None]] = field(default_factory=dict)
    commits: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class HookDeliveries:
    """GET /app/hook/deliveries and POST /app/hook/deliveries/{id}/attempts."""

    deliveries: list[dict[str, Any]] = field(default_factory=list)
    redelivered: list[int] = field(default_factory=list)
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    def add(self, guid: str, event: str, *, action: str | None = None, status_code: int = 200,
            installation_id: int | None = None) -> dict[str, Any]:  # fmt: skip
        delivery = {
            "id": next(self._ids),
            "guid": guid,
            "delivered_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "redelivery": False,
            "duration": 0.1,
            "status": "OK" if status_code < 300 else "Invalid HTTP Response: 503",
            "status_code": status_code,
            "event": event,
            "action": action,
            "installation_id": installation_id,
            "repository_id": None,
        }
        self.deliveries.append(delivery)
        return delivery

    def serve(self, request: httpx.Request) -> httpx.Response | None:
        """The answer to a call about deliveries; None for any other call."""
        path, method = request.url.path, request.method
        if path == "/app/hook/deliveries" and method == "GET":
            per_page = int(request.url.params.get("per_page") or 30)
            newest = sorted(self.deliveries, key=lambda d: d["id"], reverse=True)
            cursor = request.url.params.get("cursor")
            start = int(cursor) if cursor else 0
            page = newest[start : start + per_page]
            headers = {}
            if start + per_page < len(newest):
                base = str(request.url.copy_with(query=None))
                after = start + per_page
                headers["link"] = f'<{base}?per_page={per_page}&cursor={after}>; rel="next"'
            return httpx.Response(200, json=page, headers=headers)
        attempt = re.fullmatch(r"/app/hook/deliveries/(\d+)/attempts", path)
        if attempt and method == "POST":
            delivery_id = int(attempt.group(1))
            if not any(d["id"] == delivery_id for d in self.deliveries):
                return httpx.Response(404, json={"message": "Not Found"})
            self.redelivered.append(delivery_id)
            return httpx.Response(202, json={})
        return None


class FakeGitHub(InjectsFaults):
    """GitHub in memory, answering through `router` (respx) or `serve` (any transport)."""

    def __init__(self, router: respx.MockRouter | None = None, base_url: str = API_URL) -> None:
        self.base = base_url.rstrip("/")
        self.repos: dict[str, Repo] = {}
        self.tokens_minted: list[int] = []
        self.suspended: set[int] = set()
        self.calls: list[tuple[str, str]] = []
        self.hooks = HookDeliveries()
        self.faults = Faults()
        self._ids = itertools.count(100)
        self._lock = threading.Lock()
        if router is not None:
            router.route(url__regex=rf"^{re.escape(self.base)}/.*").mock(side_effect=self.serve)

    # --- set up ---------------------------------------------------------------------------

    def add_repo(self, full_name: str, branch: str = "main") -> Repo:
        repo = Repo(full_name, default_branch=branch)
        root = self._sha("root", full_name)
        repo.trees[root] = {"README.md": self._sha("readme")}
        repo.commits[root] = {"tree": root, "parents": [], "message": "initial"}
        repo.branches[branch] = root
        self.repos[full_name.lower()] = repo
        return repo

    def fault_body(self, status: int) -> dict[str, Any]:
        return {"message": "Server Error"}

    def rate_limit(self, method: str, path_suffix: str, *, times: int = 1) -> None:
        """GitHub's primary rate limit: 403 with no requests remaining until a reset."""
        reset = str(int(time.time()) + 1)
        self.fail(
            method,
            path_suffix,
            status=403,
            times=times,
            headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": reset},
            body={"message": "API rate limit exceeded for installation ID 1."},
        )

    def suspend(self, installation_id: int, suspended: bool = True) -> None:
        """Block (or, with False, unblock) the App's access through this installation."""
        if suspended:
            self.suspended.add(installation_id)
        else:
            self.suspended.discard(installation_id)

    def pulls(self, full_name: str) -> list[dict[str, Any]]:
        return self.repos[full_name.lower()].pulls

    def count(self, method: str, path_suffix: str) -> int:
        return sum(1 for m, p in self.calls if m == method and p.endswith(path_suffix))

    def pull_requests_opened(self) -> int:
        return sum(len(repo.pulls) for repo in self.repos.values())

    def pull_requests_by_head(self) -> collections.Counter[tuple[str, str]]:
        return collections.Counter(
            (repo.full_name, pull["head"]["ref"])
            for repo in self.repos.values()
            for pull in repo.pulls
        )

    # --- serving ----------------------------------------------------------------------------

    def serve(self, request: httpx.Request) -> httpx.Response:
        """One call, answered as GitHub would (or by the fault waiting for it)."""
        with self._lock:
            self.calls.append((request.method, request.url.path))
            return self.faults.around(request, self._answer)

    def _answer(self, request: httpx.Request) -> httpx.Response:
        method, path = request.method, request.url.path
        delivery = self.hooks.serve(request)
        if delivery is not None:
            return delivery
        token = re.fullmatch(r"/app/installations/(\d+)/access_tokens", path)
        if token and method == "POST":
            if not request.headers.get("authorization", "").startswith("Bearer "):
                return _error(401, "A JSON web token could not be decoded")
            if int(token.group(1)) in self.suspended:
                return _error(403, "This installation has been suspended")
            self.tokens_minted.append(int(token.group(1)))
            expires = datetime.now(UTC) + timedelta(hours=1)
            return httpx.Response(
                201,
                json={
                    "token": f"ghs_{len(self.tokens_minted)}",
                    "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
                },
            )
        match = re.fullmatch(r"/repos/([^/]+/[^/]+)/?(.*)", path)
        if not match:
            return _error(404, "Not Found")
        if not request.headers.get("authorization", "").startswith("token "):
            return _error(401, "Bad credentials")
        if self._installation_of(request) in self.suspended:
            return _error(403, "This installation has been suspended")
        repo = self.repos.get(match.group(1).lower())
        if repo is None:
            return _error(404, "Not Found")
        rest = match.group(2)
        body = json.loads(request.content) if request.content else {}
        if rest == "" and method == "GET":
            return httpx.Response(
                200, json={"full_name": repo.full_name, "default_branch": repo.default_branch}
            )
        if rest == "pulls" and method == "GET":
            return self._list_pulls(repo, request)
        if rest == "pulls" and method == "POST":
            return self._create_pull(repo, body)
        if rest.startswith("git/ref/heads/") and method == "GET":
            branch = rest.removeprefix("git/ref/heads/")
            if branch not in repo.branches:
                return _error(404, "Not Found")
            return httpx.Response(200, json=self._ref(repo, branch))
        if rest.startswith("git/commits/") and method == "GET":
            sha = rest.removeprefix("git/commits/")
            if sha not in repo.commits:
                return _error(404, "Not Found")
            return httpx.Response(
                200, json={"sha": sha, "tree": {"sha": repo.commits[sha]["tree"]}}
            )
        if rest == "git/blobs" and method == "POST":
            return httpx.Response(201, json={"sha": self._sha("blob", body["content"])})
        if rest == "git/trees" and method == "POST":
            return self._create_tree(repo, body)
        if rest == "git/commits" and method == "POST":
            sha = self._sha("commit", str(next(self._ids)))
            repo.commits[sha] = {
                "tree": body["tree"],
                "parents": body["parents"],
                "message": body["message"],
            }
            return httpx.Response(201, json={"sha": sha})
        if rest == "git/refs" and method == "POST":
            branch = body["ref"].removeprefix("refs/heads/")
            if branch in repo.branches:
                return _error(422, "Reference already exists")
            repo.branches[branch] = body["sha"]
            return httpx.Response(201, json=self._ref(repo, branch))
        return _error(404, "Not Found")

    def _installation_of(self, request: httpx.Request) -> int | None:
        """The installation a `ghs_<n>` token was minted for."""
        token = request.headers.get("authorization", "").removeprefix("token ")
        number = token.removeprefix("ghs_")
        if not number.isdigit() or not 0 < int(number) <= len(self.tokens_minted):
            return None
        return self.tokens_minted[int(number) - 1]

    def _list_pulls(self, repo: Repo, request: httpx.Request) -> httpx.Response:
        head = request.url.params.get("head")
        state = request.url.params.get("state", "open")
        found = [
            p
            for p in repo.pulls
            if (head is None or f"{repo.full_name.split('/')[0]}:{p['head']['ref']}" == head)
            and (state == "all" or p["state"] == state)
        ]
        return httpx.Response(200, json=found)

    def _create_pull(self, repo: Repo, body: dict[str, Any]) -> httpx.Response:
        head, base = body["head"], body["base"]
        if head not in repo.branches or base not in repo.branches:
            return _error(422, "Validation Failed", [{"field": "head", "code": "invalid"}])
        if any(p["head"]["ref"] == head and p["state"] == "open" for p in repo.pulls):
            owner = repo.full_name.split("/")[0]
            return _error(
                422,
                "Validation Failed",
                [{"message": f"A pull request already exists for {owner}:{head}."}],
            )
        number = len(repo.pulls) + 1
        pull = copy.deepcopy(_PULL_TEMPLATE)
        pull.update(
            number=number,
            id=next(self._ids),
            title=body["title"],
            body=body.get("body"),
            state="open",
            html_url=f"https://github.test/{repo.full_name}/pull/{number}",
        )
        pull["head"]["ref"] = head
        pull["head"]["sha"] = repo.branches[head]
        pull["base"]["ref"] = base
        repo.pulls.append(pull)
        return httpx.Response(201, json=pull)

    def _create_tree(self, repo: Repo, body: dict[str, Any]) -> httpx.Response:
        base = body.get("base_tree")
        files: dict[str, str | None] = dict(repo.trees.get(base, {})) if base else {}
        for entry in body["tree"]:
            if entry.get("sha") is None:
                if entry["path"] not in files:
                    return _error(422, "GitRPC::BadObjectState")
                del files[entry["path"]]
            else:
                files[entry["path"]] = entry["sha"]
        sha = self._sha("tree", json.dumps(files, sort_keys=True))
        repo.trees[sha] = files
        return httpx.Response(201, json={"sha": sha})

    def files_on(self, full_name: str, branch: str) -> dict[str, str | None]:
        repo = self.repos[full_name.lower()]
        return repo.trees[repo.commits[repo.branches[branch]]["tree"]]

    def _ref(self, repo: Repo, branch: str) -> dict[str, Any]:
        return {
            "ref": f"refs/heads/{branch}",
            "object": {"sha": repo.branches[branch], "type": "commit"},
        }

    @staticmethod
    def _sha(*parts: str) -> str:
        return hashlib.sha1("\0".join(parts).encode()).hexdigest()

    def blob_sha(self, content: str) -> str:
        return self._sha("blob", content)


def _error(status: int, message: str, errors: list[Any] | None = None) -> httpx.Response:
    body: dict[str, Any] = {"message": message}
    if errors is not None:
        body["errors"] = errors
    return httpx.Response(status, json=body)
