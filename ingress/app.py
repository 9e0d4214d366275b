"""The Starlette application: webhook routes, health, readiness and metrics.

Both webhook routes are one flow (`record_webhook`): read the body, verify and read it as
its source says (ingress/github.py `delivery_reader`, ingress/stripe.py `event_reader`),
record it (ingress/recording.py, after ingress/stored_only.py), answer.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ingress.bell import CoalescingBell
from ingress.deadline import AnswerDeadlines
from ingress.errors import Rejection
from ingress.github import MAX_HEADER_ID, delivery_reader
from ingress.limits import BodyBudget, read_body
from ingress.metrics import WEBHOOKS
from ingress.one_write import OneWriteCycle, send_two_messages
from ingress.recording import make_writer
from ingress.stored_only import StoredOnly
from ingress.stripe import event_reader
from ingress.tracing import RequestSpans
from outbox import tracing
from outbox.db import make_engine
from outbox.doorbell import Doorbell, LoopDoorbell, SilentDoorbell
from outbox.schema import schema_state
from outbox.settings import Settings
from outbox.store import IncomingEvent

log = logging.getLogger("outbox.ingress")


def create_app(
    settings: Settings,
    *,
    engine: Engine | None = None,
    doorbell: Doorbell | LoopDoorbell | None = None,
    clock: Callable[[], float] = time.time,
) -> Starlette:
    """The ingress for `settings`; `doorbell` is told about every row it stores."""
    engine = engine or make_engine(settings.database_url, timeout=settings.database_timeout_seconds)
    bell = CoalescingBell(doorbell or SilentDoorbell())
    writer = make_writer(
        engine, bell.ring_later, settings.ingress_writers, settings.database_timeout_seconds
    )
    budget = BodyBudget(settings.body_buffer_bytes)
    deadlines = AnswerDeadlines(settings.webhook_deadline_seconds)
    stored_only = StoredOnly.for_settings(settings)
    # With tracing on, each row keeps its request's trace context (outbox/tracing.py).
    traced = tracing.active()

    async def record_webhook(
        scope: Scope,
        receive: Receive,
        source: str,
        parse: Callable[[bytes, dict[str, str]], IncomingEvent],
        delivery_header: str | None = None,
    ) -> tuple[int, bytes] | None:
        started = time.perf_counter()
        headers = request_headers(scope)
        incoming: IncomingEvent | None = None
        try:
            body = await read_body(receive, headers, settings.max_body_bytes, budget)
            incoming = stored_only.finished(parse(body, headers))
            if traced:
                incoming.trace_parent = tracing.current_traceparent()
            committed = writer.submit(incoming)
            deadlines.watch(committed, started)
            recorded = await committed
        except Rejection as rejection:
            return _answer(
                source,
                rejection.outcome,
                rejection.status,
                {"error": rejection.reason},
                started,
                incoming.delivery_id if incoming else _named(headers, delivery_header),
            )
        except ClientDisconnect:
            _gone(source, started, _named(headers, delivery_header))
            return None
        except Exception as exc:
            return _failed(source, exc, started, _named(headers, delivery_header))
        outcome = "duplicate" if recorded.duplicate else "stored"
        return _answer(
            source,
            outcome,
            200,
            {"id": recorded.id, "duplicate": recorded.duplicate},
            started,
            incoming.delivery_id,
        )

    # Built once: the settings do not change under a running app, and splitting the
    # secrets again for every request was measurable.
    read_github = delivery_reader(settings.github_secrets)
    read_stripe = event_reader(
        settings.stripe_secrets, settings.stripe_webhook_tolerance, settings.stripe_mode, clock
    )

    # Partials, not functions that await record_webhook: one coroutine a webhook, not two.
    github = functools.partial(
        record_webhook, source="github", parse=read_github, delivery_header="x-github-delivery"
    )
    stripe = functools.partial(record_webhook, source="stripe", parse=read_stripe)

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> Response:
        try:
            state = await run_in_threadpool(schema_state, engine)
        except Exception as exc:
            reason = f"database unreachable: {type(exc).__name__}"
            return JSONResponse(
                {"status": "unavailable", "database": type(exc).__name__, "reason": reason}, 503
            )
        if state.problem is not None:
            return JSONResponse({"status": "unavailable", "reason": state.problem}, 503)
        return JSONResponse({"status": "ready"})

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        bell.start()
        writer.start()
        deadlines.start()
        try:
            yield
        finally:
            await writer.stop()
            await deadlines.stop()
            await bell.stop()

    webhooks = {
        "/webhooks/github": WebhookEndpoint(github),
        "/webhooks/stripe": WebhookEndpoint(stripe),
    }
    return IngressApp(
        webhooks=None if traced else webhooks,
        routes=[
            *(Route(path, endpoint, methods=["POST"]) for path, endpoint in webhooks.items()),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ],
        lifespan=lifespan,
        exception_handlers={Exception: _server_error},
        middleware=[Middleware(RequestSpans)] if traced else None,
    )


class IngressApp(Starlette):
    """Starlette, with a webhook POST handed straight to its endpoint.

    Starlette's middleware stack and router cost ~7 µs a webhook (two exception wrappers,
    route matching against every route), a twentieth of the ingress's CPU for one; a
    webhook endpoint answers its own errors (a JSON 500, see `_failed`), and uvicorn
    answers 500 for anything that escapes it. Every other request, and a webhook sent
    with another method, takes the router's way (405 and the rest). With tracing on,
    every request takes it, through the tracing middleware.

    :param webhooks: path -> endpoint for the POSTs that skip the stack (None: none do).
    """

    def __init__(self, *, webhooks: Mapping[str, ASGIApp] | None, **starlette: Any) -> None:
        super().__init__(**starlette)
        self._webhooks = webhooks or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = self._webhooks.get(scope["path"])
            if endpoint is not None:
                scope["app"] = self
                await endpoint(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


class WebhookEndpoint:
    """A webhook route as a plain ASGI app: `handle` reads the request and gives the status
    and JSON body of the answer (None: the sender is gone, nobody to answer).

    Starlette's Request, Response and the exception wrapper around them cost ~10 µs a
    webhook (an in-process loop: 16 against 6.5 µs), a fifteenth of the ingress's CPU for
    one; a webhook needs none of what they add. Being a class, not a function, is what
    tells Starlette's Route to call it as ASGI. Under the ingress's own server the answer
    goes out in one call (`OneWriteCycle.answer`); under any other, as ASGI's two messages.
    """

    def __init__(
        self, handle: Callable[[Scope, Receive], Awaitable[tuple[int, bytes] | None]]
    ) -> None:
        self._handle = handle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        answer = await self._handle(scope, receive)
        if answer is None:
            return
        status, body = answer
        cycle = getattr(send, "__self__", None)
        if type(cycle) is OneWriteCycle:
            # The ingress's own server (ingress/edge.py): the answer in one call.
            await cycle.answer(status, b"application/json", body)
        else:
            await send_two_messages(send, status, b"application/json", body)


def request_headers(scope: Scope) -> dict[str, str]:
    """The request's headers as a plain dict, the first value of a repeated name winning.

    Starlette's Headers scans the whole list at every lookup; a webhook is looked up
    about twenty times (signature, ids, the headers worth keeping).
    """
    return {
        name.decode("latin-1").lower(): value.decode("latin-1")
        for name, value in reversed(scope["headers"])
    }


def _named(headers: dict[str, str], delivery_header: str | None) -> str | None:
    """The delivery a refused request says it is, for its warning (unverified, capped)."""
    if delivery_header is None:
        return None
    return headers.get(delivery_header, "")[:MAX_HEADER_ID] or None


def _answer(
    source: str,
    outcome: str,
    status: int,
    body: dict[str, Any],
    started: float,
    delivery: str | None,
) -> tuple[int, bytes]:
    WEBHOOKS.count(source, outcome)
    elapsed = time.perf_counter() - started
    WEBHOOKS.observe(source, elapsed)
    # A stored or duplicate webhook is in its batch's INFO line (ingress.batch_log).
    level = logging.DEBUG if status < 400 else logging.WARNING
    if log.isEnabledFor(level):
        log.log(
            level,
            "webhook %s",
            outcome,
            extra={
                "source": source,
                "delivery_id": delivery,
                "outcome": outcome,
                "status": status,
                "ms": round(elapsed * 1000, 2),
                **({"reason": body["error"]} if "error" in body else {}),
            },
        )
    return status, _json(body)


def _gone(source: str, started: float, delivery: str | None) -> None:
    """A sender that went away before its body was whole: one line, nothing stored."""
    WEBHOOKS.count(source, "disconnected")
    log.warning(
        "webhook sender disconnected before its body was whole",
        extra={
            "source": source,
            "delivery_id": delivery,
            "outcome": "disconnected",
            "ms": round((time.perf_counter() - started) * 1000, 2),
        },
    )


def _failed(source: str, exc: Exception, started: float, delivery: str | None) -> tuple[int, bytes]:
    """A fault of the ingress, not of the request: 500, counted, and one log line saying
    where (a traceback per request would flood the log an attacker can make it write)."""
    frame = exc.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    where = f"{frame.tb_frame.f_code.co_filename}:{frame.tb_lineno}" if frame else None
    log.error(
        "webhook failed",
        extra={
            "source": source,
            "delivery_id": delivery,
            "outcome": "error",
            "error": type(exc).__name__,
            "detail": str(exc)[:200],
            "where": where,
        },
    )
    WEBHOOKS.count(source, "error")
    WEBHOOKS.observe(source, time.perf_counter() - started)
    return 500, b'{"error":"internal error"}'


async def _server_error(request: Request, exc: Exception) -> Response:
    """Any other route's 500, as JSON; uvicorn logs the error (one JSON line, see `serve`)."""
    WEBHOOKS.count("other", "error")
    return JSONResponse({"error": "internal error"}, 500)


def _json(content: dict[str, Any]) -> bytes:
    """An answer's body, by orjson (a third of json's cost, which every webhook pays)."""
    try:
        return orjson.dumps(content)
    except TypeError:  # a reason holding a lone surrogate: json escapes what orjson refuses
        return json.dumps(content).encode()
