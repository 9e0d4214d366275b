"""Reading a request body without ever holding more than the limits in memory.

Two limits: one body may not pass `max_bytes` (413), and the bodies of one process still
arriving may not hold more than a shared `BodyBudget` past their first SMALL_BODY_BYTES
each (503: the sender retries). Webhooks are mostly a few KB and arrive whole in one read:
those never touch the budget, so senders holding large bodies open cannot crowd them out.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.requests import ClientDisconnect
from starlette.types import Receive

from ingress.errors import BodyTooLarge, HeaderMissing, ServerBusy

SMALL_BODY_BYTES = 64 * 1024  #: bytes of each body that do not count against the budget


class BodyBudget:
    """Bytes one process may hold of bodies still arriving (one event loop: no lock).

    :param capacity: bytes; `reserve` refuses what would go past it.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.held = 0

    def reserve(self, size: int) -> bool:
        if self.held + size > self.capacity:
            return False
        self.held += size
        return True

    def release(self, size: int) -> None:
        self.held -= size


async def read_body(
    receive: Receive, headers: Mapping[str, str], max_bytes: int, budget: BodyBudget
) -> bytes:
    """The whole body of an ASGI request, or BodyTooLarge as soon as it passes `max_bytes`,
    or ServerBusy when the process holds too many large bodies still arriving.

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
    message = await receive()
    if message["type"] == "http.request" and not message.get("more_body", False):
        body: bytes = message.get("body", b"")
        if len(body) > max_bytes:
            raise BodyTooLarge(f"body is over the limit of {max_bytes} bytes")
        return body  # the usual webhook: whole in one read, no copy and no budget
    held = 0
    try:
        chunks: list[bytes] = []
        size = 0
        while True:
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > max_bytes:
                    raise BodyTooLarge(f"body is over the limit of {max_bytes} bytes")
                over = size - SMALL_BODY_BYTES - held
                if over > 0:
                    if not budget.reserve(over):
                        raise ServerBusy("too many large bodies arriving at once, try again")
                    held += over
                if chunk:
                    chunks.append(chunk)
                if not message.get("more_body", False):
                    break
            message = await receive()
        return b"".join(chunks)
    finally:
        budget.release(held)
