"""The ingress's request spans (outbox/tracing.py): added to the app only when tracing is on."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from outbox import tracing

#: Paths named in span names as they are; any other path is only its method, so a scan of
#: random URLs cannot make span names without end.
ROUTES = frozenset({"/webhooks/github", "/webhooks/stripe", "/healthz", "/readyz", "/metrics"})


class RequestSpans:
    """ASGI middleware: one server span per HTTP request, current while the app handles it
    (so the stored row takes its context), ended with the answer's status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from opentelemetry.trace import SpanKind, Status, StatusCode

        method, path = scope["method"], scope["path"]
        name = f"{method} {path}" if path in ROUTES else method
        parent = tracing.context_of(_header(scope, b"traceparent"))
        with tracing.tracer().start_as_current_span(
            name,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": path},
        ) as span:

            async def answer(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status = message["status"]
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(Status(StatusCode.ERROR))
                await send(message)

            await self.app(scope, receive, answer)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None
