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
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise BodyTooLarge(f"body is over the limit of {max_bytes} bytes")
        if chunk:
            chunks.append(chunk)
    # A webhook usually arrives in one chunk: then it is the body, with no copy.
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
