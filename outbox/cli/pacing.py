"""Keeping a bulk operation to a steady rate, so a replay of thousands never floods the workers."""

from __future__ import annotations

import time
from collections.abc import Callable

#: Most rows put back in one transaction by a paced bulk operation.
MAX_BATCH = 100


class Pacer:
    """Spaces work so that `rate` items per second are not exceeded, counted from the start.

    :param rate: items per second.
    :param clock: monotonic seconds (injectable for tests).
    :param sleep: how to wait (injectable for tests).
    """

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self._clock = clock
        self._sleep = sleep
        self._started = clock()
        self._done = 0

    @property
    def batch_size(self) -> int:
        """About one second of work per batch, at most MAX_BATCH."""
        return max(1, min(MAX_BATCH, int(self.rate)))

    def finished(self, count: int) -> None:
        """`count` more items are done: wait until the rate allows the next ones."""
        self._done += count
        due = self._started + self._done / self.rate
        wait = due - self._clock()
        if wait > 0:
            self._sleep(wait)
