"""Stripe's API held in memory: the calls the service makes (checkout sessions and their
line items, subscriptions, events, billing meter events).

One fake for every test: mounted on a respx router (`FakeStripe(router)`) for code running
in the test's process, or served over HTTP by `tests.fakes.providers.FakeProviders` for
worker processes.

Like Stripe, it refuses a second meter event with an identifier it already has (400, "An
event already exists with identifier …", `Stripe-Should-Retry: false`), and a POST repeated
with the Idempotency-Key of an earlier successful one gets that answer again. Any call can
be made to fail, before or after doing it (tests/fakes/faults.py); a failed call leaves
no answer to replay, so its retry reaches the endpoint again.
"""

from __future__ import annotations

import collections
import re
import threading
import time
from typing import Any
from urllib.parse import parse_qsl

import httpx
import respx

from tests.fakes.faults import Faults, InjectsFaults

STRIPE_BASE = "https://stripe.test"
METER_EVENTS = "/v1/billing/meter_events"


def stripe_error(message: str, *, kind: str = "invalid_request_error") -> dict[str, Any]:
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


class FakeStripe(InjectsFaults):
    """Stripe in memory, answering through `router` (respx) or `serve` (any transport).

    `meter_events[identifier]` is each meter event Stripe kept, `accepted[identifier]` how
    many times it took one (a drill asserts every value is 1), `meter_requests` every POST
    to the meter events endpoint, failed or repeated ones included (its form, with the
    request's `idempotency_key`).
    """

    def __init__(
        self,
        router: respx.MockRouter | None = None,
        base_url: str = STRIPE_BASE,
        *,
        api_key: str | None = None,
    ) -> None:
        #: The secret key Stripe accepts; None: any.
        self.api_key = api_key
        self.checkout_sessions: dict[str, dict[str, Any]] = {}
        self.line_items: dict[str, list[dict[str, Any]]] = {}
        self.subscriptions: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.meter_events: dict[str, dict[str, Any]] = {}
        self.accepted: collections.Counter[str] = collections.Counter()
        self.meter_requests: list[dict[str, Any]] = []
        self.calls: list[tuple[str, str]] = []
        self.faults = Faults()
        self._answered: dict[str, tuple[int, bytes, dict[str, str]]] = {}  #: by Idempotency-Key
        self._lock = threading.Lock()
        if router is not None:
            base = base_url.rstrip("/")
            router.route(url__regex=rf"^{re.escape(base)}/v1/.*").mock(side_effect=self.serve)

    # --- set up -----------------------------------------------------------------------------

    def add_checkout_session(
        self, session: dict[str, Any], items: list[dict[str, Any]] | None = None
    ) -> None:
        self.checkout_sessions[session["id"]] = session
        self.line_items[session["id"]] = items or []

    def fault_body(self, status: int) -> dict[str, Any]:
        kind = "rate_limit_error" if status == 429 else "api_error"
        return stripe_error("injected failure", kind=kind)

    # --- serving ----------------------------------------------------------------------------

    def serve(self, request: httpx.Request) -> httpx.Response:
        """One call, answered as Stripe would (or by the fault waiting for it)."""
        with self._lock:
            method, path = request.method, request.url.path
            self.calls.append((method, path))
            if method == "POST" and path == METER_EVENTS:
                form = form_to_nested(parse_qsl(request.content.decode()))
                self.meter_requests.append(
                    {**form, "idempotency_key": request.headers.get("idempotency-key")}
                )
            key = request.headers.get("idempotency-key") if method == "POST" else None
            if key and key in self._answered:
                status, content, headers = self._answered[key]
                return httpx.Response(status, content=content, headers=headers)
            response = self.faults.around(request, self._answer)
            if key and response.is_success:
                replayed = {**response.headers, "Idempotent-Replayed": "true"}
                self._answered[key] = (response.status_code, response.read(), replayed)
            return response

    def _answer(self, request: httpx.Request) -> httpx.Response:
        path, method = request.url.path, request.method
        if self.api_key is not None and request.headers.get("authorization") != (
            f"Bearer {self.api_key}"
        ):
            message = "Invalid API Key provided"
            return httpx.Response(401, json=stripe_error(message, kind="authentication_error"))
        if path == METER_EVENTS and method == "POST":
            return self._meter_event(request)
        items = re.fullmatch(r"/v1/checkout/sessions/([^/]+)/line_items", path)
        if items and method == "GET":
            if items.group(1) not in self.line_items:
                return _not_found(f"No such checkout session: '{items.group(1)}'")
            return httpx.Response(200, json=stripe_list(path, self.line_items[items.group(1)]))
        if path == "/v1/checkout/sessions" and method == "GET":
            wanted = request.url.params.get("payment_intent")
            found = [
                s
                for s in self.checkout_sessions.values()
                if wanted is None or s.get("payment_intent") == wanted
            ]
            return httpx.Response(200, json=stripe_list(path, found))
        sub = re.fullmatch(r"/v1/subscriptions/([^/]+)", path)
        if sub and method == "GET":
            if sub.group(1) not in self.subscriptions:
                return _not_found(f"No such subscription: '{sub.group(1)}'")
            return httpx.Response(200, json=self.subscriptions[sub.group(1)])
        if path == "/v1/events" and method == "GET":
            return httpx.Response(200, json=self._list_events(request))
        return _not_found(f"Unrecognized request URL ({method}: {path})")

    def _meter_event(self, request: httpx.Request) -> httpx.Response:
        form = form_to_nested(parse_qsl(request.content.decode()))
        identifier = form.get("identifier")
        if not identifier or not form.get("event_name") or "payload" not in form:
            return httpx.Response(400, json=stripe_error("Missing required param: identifier"))
        if identifier in self.meter_events:
            message = (
                f"An event already exists with identifier {identifier}. "
                "Please use a different identifier."
            )
            return httpx.Response(
                400, json=stripe_error(message), headers={"Stripe-Should-Retry": "false"}
            )
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
        return httpx.Response(200, json=event)

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


def _not_found(message: str) -> httpx.Response:
    return httpx.Response(404, json=stripe_error(message))
