"""A local fake GitHub + Stripe API over real HTTP, for drills and benches whose worker
processes must reach the providers (respx only sees the process it runs in).

    with FakeProviders() as fake:
        fake.github.add_repo("octo/app")
        env = {"GITHUB_API_URL": fake.url, "STRIPE_API_BASE": fake.url, ...}
        ...  # run `outbox worker` processes with env
        assert fake.pull_requests_opened() == 40
        assert fake.stripe.accepted == {"usage:pr_job:1": 1, ...}

One uvicorn server on a free 127.0.0.1 port, in a thread of the test process, serves both
APIs: Stripe's paths start with /v1/, GitHub's are /app/... and /repos/.... GitHub's
repositories, Git objects and pull requests are C's in-memory `FakeGitHub`
(tests/domain/github_fake.py, which PR jobs are tested against), with the App's webhook
deliveries added here; Stripe is `FakeStripe` below.

Faults, on either API: `fake.github.fail(method, path_suffix, status=500, store=True,
times=n)` answers the next n matching calls with `status`, after doing them if `store`
(GitHub stored the pull request and answered 500); `fake.stripe.fail(...)` is the same for
Stripe; `rate_limit_github(times)` / `fake.stripe.fail(..., status=429)` make rate limits.
"""

from __future__ import annotations

import collections
import itertools
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.domain.github_fake import Failure as Fault
from tests.domain.github_fake import FakeGitHub
from tests.services import _Service, free_port, wait_for_port

START_TIMEOUT = 10.0  #: seconds the server may take to accept connections
STOP_TIMEOUT = 5.0  #: seconds the server thread may take to stop


class Faults:
    """Injected failures, matched in the order they were added."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        self._faults.append(fault)

    def take(self, method: str, path: str) -> Fault | None:
        for fault in self._faults:
            if fault.times > 0 and fault.method == method and path.endswith(fault.path_suffix):
                fault.times -= 1
                return fault
        return None


# --- Stripe ------------------------------------------------------------------------------


def _stripe_error(status: int, message: str, *, kind: str = "invalid_request_error") -> Any:
    return {"error": {"type": kind, "message": message}}


def stripe_list(url: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"object": "list", "url": url, "has_more": False, "data": items}


def form_to_nested(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Stripe's form encoding (`payload[value]=1`) back into a nested dict."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        parts = re.findall(r"[^\[\]]+", key)
        target = result
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = value
    return result


@dataclass
class FakeStripe:
    """The Stripe API calls the service makes, held in memory.

    `accepted[identifier]` counts the meter events Stripe took for each identifier (a drill
    asserts every value is 1); `meter_requests` counts every POST, repeats included.
    """

    checkout_sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    line_items: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    meter_events: dict[str, dict[str, Any]] = field(default_factory=dict)
    accepted: collections.Counter[str] = field(default_factory=collections.Counter)
    meter_requests: int = 0
    calls: list[tuple[str, str]] = field(default_factory=list)
    faults: Faults = field(default_factory=Faults)
    _idempotent: dict[str, tuple[int, Any]] = field(default_factory=dict)

    def fail(
        self,
        method: str,
        path_suffix: str,
        *,
        status: int = 500,
        store: bool = False,
        times: int = 1,
        headers: dict[str, str] | None = None,
    ) -> None:
        kind = "rate_limit_error" if status == 429 else "api_error"
        body = _stripe_error(status, "injected failure", kind=kind)
        self.faults.add(Fault(method, path_suffix, status, store, headers or {}, body, times))

    def add_checkout_session(
        self, session: dict[str, Any], items: list[dict[str, Any]] | None = None
    ) -> None:
        self.checkout_sessions[session["id"]] = session
        self.line_items[session["id"]] = items or []

    def serve(self, request: httpx.Request) -> httpx.Response:
        method, path = request.method, request.url.path
        self.calls.append((method, path))
        fault = self.faults.take(method, path)
        if fault is not None and not fault.store:
            return httpx.Response(fault.status, json=fault.body, headers=fault.headers)
        status, body, headers = self._idempotently(request)
        if fault is not None:
            return httpx.Response(fault.status, json=fault.body, headers=fault.headers)
        return httpx.Response(status, json=body, headers=headers)

    def _idempotently(self, request: httpx.Request) -> tuple[int, Any, dict[str, str]]:
        """A POST repeated with the same Idempotency-Key gets the first answer again."""
        key = request.headers.get("idempotency-key")
        if request.method == "POST" and key and key in self._idempotent:
            status, body = self._idempotent[key]
            return status, body, {"Idempotent-Replayed": "true"}
        status, body, headers = self._answer(request)
        if request.method == "POST" and key and status < 500:
            self._idempotent[key] = (status, body)
        return status, body, headers

    def _answer(self, request: httpx.Request) -> tuple[int, Any, dict[str, str]]:
        path, method = request.url.path, request.method
        if path == "/v1/billing/meter_events" and method == "POST":
            return self._meter_event(request)
        items = re.fullmatch(r"/v1/checkout/sessions/([^/]+)/line_items", path)
        if items and method == "GET":
            if items.group(1) not in self.line_items:
                return 404, _stripe_error(404, f"No such checkout session: '{items.group(1)}'"), {}
            return 200, stripe_list(path, self.line_items[items.group(1)]), {}
        if path == "/v1/checkout/sessions" and method == "GET":
            wanted = request.url.params.get("payment_intent")
            found = [
                s
                for s in self.checkout_sessions.values()
                if wanted is None or s.get("payment_intent") == wanted
            ]
            return 200, stripe_list(path, found), {}
        sub = re.fullmatch(r"/v1/subscriptions/([^/]+)", path)
        if sub and method == "GET":
            if sub.group(1) not in self.subscriptions:
                return 404, _stripe_error(404, f"No such subscription: '{sub.group(1)}'"), {}
            return 200, self.subscriptions[sub.group(1)], {}
        if path == "/v1/events" and method == "GET":
            return 200, self._list_events(request), {}
        return 404, _stripe_error(404, f"Unrecognized request URL ({method}: {path})"), {}

    def _meter_event(self, request: httpx.Request) -> tuple[int, Any, dict[str, str]]:
        self.meter_requests += 1
        form = form_to_nested(parse_qsl(request.content.decode()))
        identifier = form.get("identifier")
        if not identifier or not form.get("event_name") or "payload" not in form:
            return 400, _stripe_error(400, "Missing required param: identifier"), {}
        if identifier in self.meter_events:
            message = (
                f"An event already exists with identifier {identifier}. "
                "Please use a different identifier."
            )
            return 400, _stripe_error(400, message), {"Stripe-Should-Retry": "false"}
        event = {
            "object": "billing.meter_event",
            "event_name": form["event_name"],
            "identifier": identifier,
            "livemode": False,
            "payload": form["payload"],
            "timestamp": int(form.get("timestamp") or time.time()),
            "created": int(time.time()),
        }
        self.meter_events[identifier] = event
        self.accepted[identifier] += 1
        return 200, event, {}

    def _list_events(self, request: httpx.Request) -> dict[str, Any]:
        """Newest first, like Stripe; `type`, `created[gte]`, `limit`, `starting_after`."""
        params = request.url.params
        found = sorted(self.events, key=lambda e: (e["created"], e["id"]), reverse=True)
        if params.get("type"):
            found = [e for e in found if e["type"] == params["type"]]
        if params.get("created[gte]"):
            found = [e for e in found if e["created"] >= int(params["created[gte]"])]
        if params.get("starting_after"):
            ids = [e["id"] for e in found]
            after = params["starting_after"]
            found = found[ids.index(after) + 1 :] if after in ids else []
        limit = int(params.get("limit") or 10)
        page = stripe_list("/v1/events", found[:limit])
        page["has_more"] = len(found) > limit
        return page


# --- GitHub: the App's webhook deliveries, next to FakeGitHub's repositories ---------------


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


# --- the server ---------------------------------------------------------------------------


class FakeProviders(_Service):
    """GitHub and Stripe on one local port; see the module docstring."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.github = FakeGitHub(None, base_url=self.url)
        self.hooks = HookDeliveries()
        self.stripe = FakeStripe()
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # counters the drills assert on
    def pull_requests_opened(self) -> int:
        return sum(len(repo.pulls) for repo in self.github.repos.values())

    def pull_requests_by_head(self) -> collections.Counter[tuple[str, str]]:
        return collections.Counter(
            (repo.full_name, pull["head"]["ref"])
            for repo in self.github.repos.values()
            for pull in repo.pulls
        )

    def rate_limit_github(self, method: str, path_suffix: str, *, times: int = 1) -> None:
        """GitHub's primary rate limit: 403 with no requests remaining until a reset."""
        reset = str(int(time.time()) + 1)
        self.github.fail(
            method,
            path_suffix,
            status=403,
            times=times,
            headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": reset},
            body={"message": "API rate limit exceeded for installation ID 1."},
        )

    def handle(self, request: httpx.Request) -> httpx.Response:
        """One call, answered by whichever fake owns its path (one at a time)."""
        with self._lock:
            if request.url.path.startswith("/v1/"):
                return self.stripe.serve(request)
            return self.hooks.serve(request) or self.github._serve(request)

    async def _asgi_endpoint(self, request: Request) -> Response:
        body = await request.body()
        forwarded = httpx.Request(
            request.method, str(request.url), headers=request.headers.raw, content=body
        )
        answer = self.handle(forwarded)
        content = answer.read()
        dropped = ("content-length", "content-encoding")
        headers = {k: v for k, v in answer.headers.items() if k not in dropped}
        return Response(content, answer.status_code, headers=headers)

    def app(self) -> Starlette:
        methods = ["GET", "POST", "PATCH", "PUT", "DELETE"]
        return Starlette(routes=[Route("/{path:path}", self._asgi_endpoint, methods=methods)])

    def start(self) -> None:
        config = uvicorn.Config(
            self.app(), host="127.0.0.1", port=self.port, log_level="warning", access_log=False,
            lifespan="off",
        )  # fmt: skip
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="fake-providers", daemon=True)
        self._thread.start()
        wait_for_port(self.port, timeout=START_TIMEOUT, alive=self._thread.is_alive)

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT)
        self._server = self._thread = None

    def close(self) -> None:
        self.stop()
