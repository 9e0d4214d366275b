"""The webhook deadline: every webhook is answered within WEBHOOK_DEADLINE_SECONDS.

A webhook still waiting for its commit at its deadline is answered 503 then, whatever the
database is doing. Its row may still commit afterwards: the provider's retry is then
answered as a duplicate. A 2xx is only ever the answer of a commit that returned.

One timer for all of them, ticking every TICK, rather than a timer per request: watching a
webhook costs a list append, and the answer comes at most TICK past the deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from ingress.errors import NotCommittedInTime

TICK = 0.1  #: seconds between two looks at the waiting webhooks


class AnswerDeadlines:
    """Fails each watched future with NotCommittedInTime once its deadline has passed.

    :param seconds: the deadline, counted from the `started` given to `watch` (perf_counter).
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._watched: list[tuple[float, asyncio.Future[Any]]] = []
        self._task: asyncio.Task[None] | None = None

    def watch(self, future: asyncio.Future[Any], started: float) -> None:
        self._watched.append((started + self.seconds, future))

    def start(self) -> None:
        """Start ticking on the running loop (the app's lifespan)."""
        self._task = asyncio.get_running_loop().create_task(self._tick(), name="outbox-deadlines")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def expire(self, now: float) -> None:
        """Answer every watched webhook whose deadline is past `now`; forget the settled ones."""
        waiting: list[tuple[float, asyncio.Future[Any]]] = []
        for deadline, future in self._watched:
            if future.done():
                continue
            if deadline <= now:
                future.set_exception(
                    NotCommittedInTime(f"not committed within {self.seconds:g} s; try again later")
                )
            else:
                waiting.append((deadline, future))
        self._watched = waiting

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            if self._watched:
                self.expire(time.perf_counter())
