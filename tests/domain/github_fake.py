"""A GitHub REST API held in memory, served through respx: just what PR jobs call.

It keeps repositories' branches, Git objects and pull requests, so a test can check what
exists after a run (one pull request, one branch), count the tokens minted, and make any
call fail: `fail("POST", "/pulls", status=500, store=True)` answers 500 *after* storing the
pull request, as GitHub sometimes does. `suspend(installation)` blocks an installation as
GitHub does: no new token, and its tokens already minted are refused.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import respx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.conftest import CORPUS

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
class Failure:
    method: str
    path_suffix: str
    status: int
    store: bool
    headers: dict[str, str]
    body: dict[str, Any] | list[Any]
    times: int


class FakeGitHub:
    """GitHub in memory: through `router` (respx), or over HTTP (`serve_http()`) for processes."""

    def __init__(self, router: respx.MockRouter | None, base_url: str = API_URL) -> None:
        self.base = base_url.rstrip("/")
        self.repos: dict[str, Repo] = {}
        self.tokens_minted: list[int] = []
        self.suspended: set[int] = set()
        self.calls: list[tuple[str, str]] = []
        self._failures: list[Failure] = []
        self._ids = itertools.count(100)
        self._lock = threading.Lock()
        if router is not None:
            router.route(url__regex=rf"^{re.escape(self.base)}/.*").mock(side_effect=self._serve)

    def serve_http(self) -> tuple[str, Callable[[], None]]:
        """Serve on a free local port; returns the base URL and a function that stops it."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                request = httpx.Request(
                    self.command,
                    f"http://{self.headers['host']}{self.path}",
                    headers=dict(self.headers.items()),
                    content=self.rfile.read(length) if length else b"",
                )
                response = fake._serve(request)
                body = response.read()
                self.send_response(response.status_code)
                for name, value in response.headers.items():
                    if name.lower() not in ("content-length", "transfer-encoding"):
                        self.send_header(name, value)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PATCH = do_DELETE = _any

            def log_message(self, format: str, *args: Any) -> None:
                return None

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()

        def stop() -> None:
            server.shutdown()
            server.server_close()

        return f"http://127.0.0.1:{server.server_port}", stop

    # --- set up ---------------------------------------------------------------------------

    def add_repo(self, full_name: str, branch: str = "main") -> Repo:
        repo = Repo(full_name, default_branch=branch)
        root = self._sha("root", full_name)
        repo.trees[root] = {"README.md": self._sha("readme")}
        repo.commits[root] = {"tree": root, "parents": [], "message": "initial"}
        repo.branches[branch] = root
        self.repos[full_name.lower()] = repo
        return repo

    def fail(
        self,
        method: str,
        path_suffix: str,
        *,
        status: int = 500,
        store: bool = False,
        times: int = 1,
        headers: dict[str, str] | None = None,
        body: dict[str, Any] | list[Any] | None = None,
    ) -> None:
        """Answer the next `times` matching calls with `status` (after doing them if `store`)."""
        self._failures.append(
            Failure(
                method,
                path_suffix,
                status,
                store,
                headers or {},
                {"message": "Server Error"} if body is None else body,
                times,
            )
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

    # --- serving ----------------------------------------------------------------------------

    def _serve(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            return self._serve_one(request)

    def _serve_one(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        method = request.method
        self.calls.append((method, path))
        failure = self._failure_for(method, path)
        if failure is not None and not failure.store:
            return self._failed(failure)
        response = self._answer(request, method, path)
        if failure is not None:
            return self._failed(failure)
        return response

    def _failure_for(self, method: str, path: str) -> Failure | None:
        for failure in self._failures:
            if failure.method == method and path.endswith(failure.path_suffix) and failure.times:
                failure.times -= 1
                return failure
        return None

    @staticmethod
    def _failed(failure: Failure) -> httpx.Response:
        return httpx.Response(failure.status, json=failure.body, headers=failure.headers)

    def _answer(self, request: httpx.Request, method: str, path: str) -> httpx.Response:
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
