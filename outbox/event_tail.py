"""Following the events table as rows arrive and finish (`outbox events tail`).

It reads by ranges of the primary key, never by scanning the table: each poll asks for
the rows past a low-water id, and the outcomes of the rows it showed by their ids.

Ids are taken before commit, so rows are not always visible in id order: a row committed
late (its batch waited on the database) can appear below one already shown. The low-water
id therefore trails the top by the rows received in the last few seconds (longer than any
webhook may wait for its commit), and the rows already shown are remembered.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

from outbox import queries
from outbox.driver.dbapi import Connection
from outbox.queries import EventFilter
from outbox.query_results import EventSummary
from outbox.states import IN_LINE

#: Rows read per query while catching up; a busier second is read in several.
TAIL_PAGE = 500
#: Rows whose outcome is awaited at most; past it the oldest are no longer followed.
MAX_WATCHED = 5000

_IN_LINE = {s.value for s in IN_LINE}

#: Called with "new" or "outcome" and the row, for each line a tail shows.
Emit = Callable[[str, EventSummary], None]


class EventTail:
    """What a tail has read: the low-water id, the rows shown above it, the rows whose
    outcome it awaits (and the status and attempts it last showed for each)."""

    def __init__(self, where: EventFilter, settle: timedelta) -> None:
        self.where = where
        self.settle = settle
        self.low = 0
        self.shown: set[int] = set()
        self.watched: dict[int, tuple[str, int]] = {}

    def start(self, db: Connection, last: int, emit: Emit) -> int:
        """Show the `last` newest matching rows, oldest first; returns how many."""
        top = queries.newest_id(db)
        rows = queries.list_events(db, self.where, limit=last, before_id=top + 1) if last else []
        for row in reversed(rows):
            self._show(row, emit)
        self.low = queries.settled_id(db, datetime.now(UTC) - self.settle)
        # Rows of the settling window not shown (older than the `last` ones) stay unshown.
        self.shown.update(r.id for r in self._matching(db, self.low, top))
        return len(rows)

    def poll(self, db: Connection, emit: Emit) -> None:
        """One look: the rows that appeared, then the outcomes of the rows awaited."""
        top = queries.newest_id(db)
        for row in self._matching(db, self.low, top):
            if row.id not in self.shown:
                self._show(row, emit)
        for row in queries.summaries_of(db, list(self.watched)):
            if (row.status, row.attempts) != self.watched[row.id]:
                emit("outcome", row)
                self._await(row)
        self.low = max(self.low, queries.settled_id(db, datetime.now(UTC) - self.settle))
        self.shown = {i for i in self.shown if i > self.low}

    def follow(self, db: Connection, emit: Emit, interval: float, *, polls: int = -1) -> None:
        """Poll every `interval` seconds, `polls` times (-1: until interrupted): each read
        runs in its own transaction (the connection autocommits), so each sees new rows."""
        while polls != 0:
            time.sleep(interval)
            self.poll(db, emit)
            polls -= 1

    def _matching(self, db: Connection, after: int, top: int) -> Iterable[EventSummary]:
        while after < top:
            rows = queries.events_after(
                db, self.where, after_id=after, up_to_id=top, limit=TAIL_PAGE
            )
            yield from rows
            if len(rows) < TAIL_PAGE:
                return
            after = rows[-1].id

    def _show(self, row: EventSummary, emit: Emit) -> None:
        self.shown.add(row.id)
        emit("new", row)
        self._await(row)

    def _await(self, row: EventSummary) -> None:
        if row.status in _IN_LINE:
            self.watched[row.id] = (row.status, row.attempts)
            if len(self.watched) > MAX_WATCHED:
                del self.watched[min(self.watched)]
        else:
            self.watched.pop(row.id, None)
