"""Rings the doorbell off the request path, coalesced: one ring in flight at a time, naming
every row committed since the one before.

A ring costs about the same whatever it names (one Redis round trip, a few Dramatiq
messages), so its cost per webhook falls as the rate grows. Alone, a commit rings at once
(the next turn of the loop); under load, the rows of every commit that lands while a ring
is in flight, or within RING_SPACING of the last one's start, go out together in the next.

A `LoopDoorbell` (the Redis one `outbox serve` rings) is awaited on the event loop: no
thread takes the interpreter from the requests. A blocking `Doorbell` (tests, the
in-process broker) is rung in a thread, one ring at a time.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import cast

from ingress.metrics import DOORBELL_FAILURES
from outbox.doorbell import Doorbell, LoopDoorbell

log = logging.getLogger("outbox.ingress.bell")

MAX_WAITING = 100_000  #: ids held while the broker is slow; past that they are dropped
#: seconds between the starts of two rings at least. A ring costs ~140 µs of CPU whatever
#: it names (most of it the loopback send to Redis); at 2 ms apart, ringing still cost the
#: ingress 10-20 µs a webhook at 5,000/s. At 5 ms it is at most 200 rings a second, each
#: naming every row of the last few milliseconds; a lone webhook still rings at once.
RING_SPACING = 0.005
#: seconds the bell rests after the broker failed. Rows committed meanwhile wait (or are
#: dropped past MAX_WAITING; the sweeper rings for those rows): retrying at once cost a
#: failed connection attempt per batch, on the interpreter the requests need.
REST_AFTER_FAILURE = 1.0
#: seconds a stopping ingress gives its last ring
LAST_RING_TIMEOUT = 2.0


class CoalescingBell:
    """Collects the ids of committed rows and rings for them from one task on the loop.

    :param doorbell: where the rings go: awaited on the loop when its `ring` is a
        coroutine function, else called in a thread.
    """

    def __init__(self, doorbell: Doorbell | LoopDoorbell) -> None:
        self._doorbell = doorbell
        self._ring: Callable[[list[int]], Awaitable[None]]
        ring: Callable[..., object] = doorbell.ring
        if inspect.iscoroutinefunction(ring):
            self._ring = ring
        else:
            blocking = cast(Callable[[list[int]], None], ring)
            self._ring = lambda ids: asyncio.to_thread(blocking, ids)
        self._waiting: list[int] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._wake: asyncio.Event | None = None
        self._stopping: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start ringing from the running loop (the app's lifespan)."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task = self._loop.create_task(self._run(), name="outbox-bell")

    async def stop(self) -> None:
        """Ring once more for what waits (bounded by LAST_RING_TIMEOUT), then close."""
        if self._task is not None and self._stopping is not None and self._wake is not None:
            self._stopping.set()
            self._wake.set()
            try:
                async with asyncio.timeout(LAST_RING_TIMEOUT):
                    await self._task
            except TimeoutError:
                log.warning("the last ring did not finish; the sweeper will find the rows")
            self._task = None
        close = getattr(self._doorbell, "close", None)
        if close is not None and inspect.iscoroutinefunction(close):
            await close()

    def ring_later(self, event_ids: Sequence[int]) -> None:
        """Ring for these ids soon. Called on the loop (Postgres writer) or from a writer
        thread (SQLite); never blocks, never raises."""
        if self._loop is not None and threading.get_ident() != self._loop_thread:
            self._loop.call_soon_threadsafe(self._add, list(event_ids))
        else:
            self._add(event_ids)

    def _add(self, event_ids: Sequence[int]) -> None:
        if len(self._waiting) >= MAX_WAITING:  # the sweeper finds these rows
            DOORBELL_FAILURES.inc()
            return
        self._waiting.extend(event_ids)
        if self._wake is not None:
            self._wake.set()

    async def _run(self) -> None:
        assert self._loop is not None and self._wake is not None and self._stopping is not None
        last_start = -RING_SPACING
        while True:
            if not self._waiting:
                if self._stopping.is_set():
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            wait = last_start + RING_SPACING - self._loop.time()
            if wait > 0 and not self._stopping.is_set():
                await asyncio.sleep(wait)
            ids = sorted(set(self._waiting))
            self._waiting = []
            last_start = self._loop.time()
            if not await self._send(ids) and not self._stopping.is_set():
                try:
                    async with asyncio.timeout(REST_AFTER_FAILURE):
                        await self._stopping.wait()
                except TimeoutError:
                    pass

    async def _send(self, ids: list[int]) -> bool:
        try:
            await self._ring(ids)
        except Exception as exc:
            DOORBELL_FAILURES.inc()
            log.warning(
                "doorbell failed; the sweeper will find the rows",
                extra={"error": type(exc).__name__, "count": len(ids)},
            )
            return False
        return True
