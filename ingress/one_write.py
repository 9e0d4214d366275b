"""A response's head and body sent to the socket in one write.

uvicorn writes an answer's status line and headers as soon as the app sends
`http.response.start`, and its body with `http.response.body`: two sends, two TCP
segments, and the sender woken twice for every webhook answered. `OneWriteCycle` keeps
the head until the first body message and writes them together; the bytes on the wire
are the same. A `100 Continue` (written while the app reads the body) is not held.
A webhook's answer skips the two messages: `OneWriteCycle.answer` writes the same bytes.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, RequestResponseCycle


class OneWriteCycle(RequestResponseCycle):
    """uvicorn's request-response cycle, its response head held until the body goes out.

    A head never followed by a body (the app failed between the two) is never written:
    uvicorn then closes the connection, as it does after a head alone.
    """

    _held = b""  #: the head written but not yet sent

    async def send(self, message: Any) -> None:
        transport = self.transport
        if not self.response_started and message["type"] == "http.response.start":
            holder = _Holder()
            self.transport = holder  # type: ignore[assignment]
            try:
                await super().send(message)
            finally:
                self.transport = transport
            self._held = holder.held
            return
        if not self._held:
            await super().send(message)
            return
        self.transport = _Prefixed(transport, self._held)  # type: ignore[assignment]
        self._held = b""
        try:
            await super().send(message)
        finally:
            self.transport = transport

    async def answer(self, status: int, content_type: bytes, body: bytes) -> None:
        """A whole response with a body (`status`, content-type and content-length
        headers), as `send` writes it for a start and a body message, in one write.

        For the app's own answers (ingress/app.py `WebhookEndpoint`), whose headers it
        knows are valid: uvicorn's `send` checks every header name and value with two
        regular expressions and parses the content-length back, on every webhook.
        """
        if self.response_started or self.access_log or self.scope["method"] == "HEAD":
            # What uvicorn must decide itself (a second answer is its error to raise).
            await send_two_messages(self.send, status, content_type, body)
            return
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.disconnected:
            return
        self.response_started = True
        self.waiting_for_100_continue = False
        head = [STATUS_LINE[status]]
        for name, value in self.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [b"content-length: %d\r\ncontent-type: " % len(body), content_type, b"\r\n"]
        if not self.keep_alive:
            head.append(b"connection: close\r\n")
        head += [b"\r\n", body]
        self.chunked_encoding = False
        self.transport.write(b"".join(head))
        self.response_complete = True
        self.message_event.set()
        if not self.keep_alive:
            self.transport.close()
        self.on_response()


async def send_two_messages(send: Any, status: int, content_type: bytes, body: bytes) -> None:
    """A whole answer as ASGI's two messages, under any server (the one-call path is
    `OneWriteCycle.answer`)."""
    headers = [(b"content-length", b"%d" % len(body)), (b"content-type", content_type)]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _Holder:
    """Stands in for the transport while uvicorn writes a response's head."""

    __slots__ = ("held",)

    def __init__(self) -> None:
        self.held = b""

    def write(self, data: bytes) -> None:
        self.held += data


class _Prefixed:
    """Stands in for the transport while uvicorn writes a body: the held head goes first,
    in the same write; everything else is the transport's own."""

    __slots__ = ("_head", "_transport")

    def __init__(self, transport: Any, head: bytes) -> None:
        self._transport = transport
        self._head = head

    def write(self, data: bytes) -> None:
        head, self._head = self._head, b""
        self._transport.write(head + data if head else data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
