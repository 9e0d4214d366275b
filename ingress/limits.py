"""Reading a request body without ever holding more than the limit in memory."""

from __future__ import annotations

from starlette.requests import Request

from ingress.errors import BodyTooLarge, HeaderMissing


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The whole body, or BodyTooLarge as soon as it passes `max_bytes`."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise HeaderMissing("Content-Length is not a number") from None
        if size > max_bytes:
            raise BodyTooLarge(f"body of {size} bytes is over the limit of {max_bytes}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise BodyTooLarge(f"body is over the limit of {max_bytes} bytes")
    return bytes(body)
