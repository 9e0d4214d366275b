"""Reading a request body without ever holding more than the limit in memory."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.requests import ClientDisconnect
from starlette.types import Receive

from ingress.errors import BodyTooLarge, HeaderMissing


async def read_body(receive: Receive, headers: Mapping[str, str], max_bytes: int) -> bytes:
    """The whole body of an ASGI request, or BodyTooLarge as soon as it passes `max_bytes`.

    Raises starlette's ClientDisconnect when the sender goes away first, as its Request does.
    """
    declared = headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise HeaderMissing("Content-Length is not a number") from None
        if size > max_bytes:
            raise BodyTooLarge(f"body of {size} bytes is over the limit of {max_bytes}")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        if message["type"] != "http.request":
            continue
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise BodyTooLarge(f"body is over the limit of {max_bytes} bytes")
        if chunk:
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    # A webhook usually arrives in one chunk: then it is the body, with no copy.
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
