"""The public edge: what one connection may cost the server before and while the app reads it.

uvicorn's httptools protocol puts no bound on a request's head, and httptools grows a
header value by concatenation: a 64 MB header cost ~3.8 s of CPU, and every other request
on the loop waited behind it. Nor does it time out a connection that sends its head or
body slowly, or bound how many connections it serves. `EdgeProtocol` is that protocol
with those four bounds, and its answers written in one send each (ingress/one_write.py):

- a request line and headers over `max_header_bytes` are answered 431 and the connection
  closed, after at most one read (256 KiB) past the cap went to the parser (a read
  that ends one request and starts the next is not counted);
- a head not complete `header_timeout` seconds after its first byte (or after the
  connection opened) is answered 408, a body not complete `body_timeout` seconds after its
  head likewise; the connection is closed either way;
- past `max_connections` open connections a request is answered 503 (providers retry).

h11 has its own cap (`h11_max_incomplete_event_size`), but it is pure Python: the ingress
would pay for it on every webhook. This subclass leaves httptools' fast path as it was and
adds a counter and one timer per connection. A deadline's timer is armed once a read ends
with a head or a body still incomplete: a request that arrives whole in one read (most
webhooks) arms none. Written against uvicorn 0.55 (the pinned version);
tests/ingress/test_edge.py drives it through a real `outbox serve`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass
from typing import Any

import orjson
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.server import ServerState

from ingress.metrics import edge_refusals
from ingress.one_write import OneWriteCycle
from outbox.settings import Settings

log = logging.getLogger("outbox.ingress.edge")

_HEAD, _BODY = "head", "body"  #: what a connection's deadline is for


@dataclass(frozen=True)
class EdgeLimits:
    """What one ingress process allows a connection (the settings of the same names)."""

    max_header_bytes: int  #: bytes of request line and headers
    header_timeout: float  #: seconds from a request's first byte to the end of its head
    body_timeout: float  #: seconds from the end of a request's head to the end of its body
    max_connections: int  #: open connections; requests on more are answered 503


def edge_limits(settings: Settings) -> EdgeLimits:
    return EdgeLimits(
        max_header_bytes=settings.max_header_bytes,
        header_timeout=settings.header_timeout_seconds,
        body_timeout=settings.body_timeout_seconds,
        max_connections=settings.max_connections,
    )


def edge_protocol(limits: EdgeLimits) -> Any:
    """The protocol factory to give uvicorn as its `http` (it is called like the class)."""
    return functools.partial(EdgeProtocol, limits=limits)


class EdgeProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a cap on request heads, two deadlines and a
    bound on connections (see the module's doc).

    :param limits: the bounds; the other parameters are uvicorn's.
    """

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: EdgeLimits,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        #: Bytes of the current head fed to the parser (None: no head is being read).
        self._head_bytes: int | None = 0
        #: A request ended within the read being fed: the rest of that read is not counted.
        self._request_ended = False
        #: What the connection waits for (_HEAD, _BODY, None: nothing), and what the armed
        #: timer, if any, is the deadline of.
        self._pending: str | None = _HEAD
        self._armed_for: str | None = None
        self._deadline: asyncio.TimerHandle | None = None

    # -- the connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # A connection that never sends a byte is held by nothing else.
        self._arm_pending()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        self._request_ended = False
        super().data_received(data)
        if self.transport.is_closing():
            return
        if self._head_bytes is not None and not self._request_ended:
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_header_bytes:
                self._refuse(
                    431,
                    "header_too_large",
                    f"request line and headers are over {self.limits.max_header_bytes} bytes",
                )
                return
        if self._pending is not self._armed_for:
            self._arm_pending()

    # -- parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        # Armed when the read ends before the head does; a connection's first head keeps
        # the clock started when it opened.
        self._pending = _HEAD

    def on_headers_complete(self) -> None:
        self._head_bytes = None
        self._pending = _BODY
        if len(self.connections) <= self.limits.max_connections:
            super().on_headers_complete()
        else:
            # Answered by a small app of our own in the app's place, through uvicorn's cycle.
            self.app = _server_busy
            try:
                super().on_headers_complete()
            finally:
                self.app = self.config.loaded_app
        if type(self.cycle) is RequestResponseCycle:
            # The cycle uvicorn just made, its task not yet run: its answers go out in one
            # write each (ingress/one_write.py).
            self.cycle.__class__ = OneWriteCycle

    def on_message_complete(self) -> None:
        self._pending = None
        self._request_ended = True
        super().on_message_complete()

    # -- deadlines

    def _arm_pending(self) -> None:
        """The deadline of what the connection waits for now, counted from now (or none)."""
        if self._pending is None:
            self._disarm()
        else:
            self._arm(self._pending)

    def _arm(self, what: str) -> None:
        """The deadline of the head (_HEAD) or the body (_BODY), counted from now."""
        self._disarm()
        if what is _HEAD:
            self._deadline = self.loop.call_later(self.limits.header_timeout, self._head_too_slow)
        else:
            self._deadline = self.loop.call_later(self.limits.body_timeout, self._body_too_slow)
        self._armed_for = what

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._armed_for = None

    def _head_too_slow(self) -> None:
        self._deadline = None
        self._armed_for = None
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined head behind a request still being answered: its turn comes later.
            self._arm(_HEAD)
            return
        if self._head_bytes == 0 and self.cycle is None:
            self._close("idle", "connection sent no request")
            return
        self._refuse(
            408, "header_timeout", f"request head not received in {self.limits.header_timeout} s"
        )

    def _body_too_slow(self) -> None:
        self._deadline = None
        self._armed_for = None
        if self.pipeline:
            # Queued behind a request still being answered, its body is not read yet.
            self._arm(_BODY)
            return
        if self.cycle is not None and self.cycle.response_started:
            self._close("body_timeout", "body still arriving after the answer")
            return
        self._refuse(
            408, "body_timeout", f"request body not received in {self.limits.body_timeout} s"
        )

    # -- answers

    def send_400_response(self, msg: str) -> None:
        """What the parser refuses (uvicorn answers it in plain text): a JSON reason too."""
        self.transport.write(_answer(400, msg))
        self.transport.close()

    def _refuse(self, status: int, outcome: str, reason: str) -> None:
        """Answer `status` with a JSON reason and close, whatever the app was doing."""
        self.transport.write(_answer(status, reason))
        self._close(outcome, reason)

    def _close(self, outcome: str, reason: str) -> None:
        self._disarm()
        edge_refusals(outcome).inc()
        if outcome != "idle":
            client = f"{self.client[0]}:{self.client[1]}" if self.client else None
            extra = {"outcome": outcome, "reason": reason, "client": client}
            log.warning("connection refused", extra=extra)
        if self.cycle is not None and not self.cycle.response_complete:
            # The app, if it is still reading, sees a disconnect and writes nothing more.
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        self.transport.close()


def _answer(status: int, reason: str) -> bytes:
    """A whole response closing its connection, with `reason` as JSON."""
    body = orjson.dumps({"error": reason})
    return b"".join(
        [
            STATUS_LINE[status],
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
            body,
        ]
    )


async def _server_busy(scope: Any, receive: Any, send: Any) -> None:
    body = b'{"error":"too many connections, try again later"}'
    edge_refusals("too_many_connections").inc()
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
                (b"connection", b"close"),
                (b"retry-after", b"1"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
