"""Keeping a bulk operation to a steady rate, so a replay of thousands never floods the workers."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from outbox.settings import Settings

#: Most rows put back in one transaction by a paced bulk operation.
MAX_BATCH = 100
#: Why a row a replay was to take was not put back: it changed between the check and the write.
CHANGED_WHILE_REPLAYING = "its status changed while replaying (someone else replayed or claimed it)"


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


def replay_paced(
    settings: Settings,
    sessions: sessionmaker[Session],
    ids: Sequence[int],
    rate: float,
    *,
    advanced: Callable[[list[int], list[int]], None] | None = None,
) -> tuple[set[int], list[str]]:
    """Put `ids` back (operator_writes.replay) in batches of about a second at `rate` per
    second, ringing the processors after each; `advanced(batch, put_back)` after each
    batch. Returns the ids put back and what the rings said (the CLI's and the console's
    replays)."""
    from outbox import operator_writes
    from outbox.cli.ringing import ProcessorsBell
    from outbox.db import transaction

    pacer = Pacer(rate)
    put_back: set[int] = set()
    bell = ProcessorsBell(settings)
    for start in range(0, len(ids), pacer.batch_size):
        batch = list(ids[start : start + pacer.batch_size])
        with transaction(sessions) as session:
            done = operator_writes.replay(session, batch, now=datetime.now(UTC))
        put_back.update(done)
        bell.ring(done)
        if advanced is not None:
            advanced(batch, done)
        if start + len(batch) < len(ids):
            pacer.finished(len(batch))
    note = bell.ring([]).note
    return put_back, [note] if note else []
