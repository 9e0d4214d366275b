"""`outbox events tail`: new events and their outcomes as they happen.

It reads by ranges of the primary key, never by scanning the table: each poll asks for
the rows past a low-water id, and the outcomes of the rows it showed by their ids.

Ids are taken before commit, so rows are not always visible in id order: a row committed
late (its batch waited on the database) can appear below one already shown. The low-water
id therefore trails the top by the rows received in the last TAIL_SETTLE seconds (longer
than any webhook may wait for its commit), and the rows already shown are remembered.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

import typer
from sqlalchemy.orm import Session, sessionmaker

from outbox import events as queries
from outbox.cli.common import JSON_OPTION, fail, friendly_errors, print_json_lines, say
from outbox.cli.database import open_database
from outbox.db import utcnow
from outbox.events import EventFilter, EventSummary
from outbox.models import IN_LINE, Source, Status
from outbox.settings import get_settings

#: Rows read per query while catching up; a busier second is read in several.
TAIL_PAGE = 500
#: Rows whose outcome is awaited at most; past it the oldest are no longer followed.
MAX_WATCHED = 5000
#: Seconds a poll looks back for rows committed out of id order, past the webhook deadline.
TAIL_SETTLE_MARGIN = 1.0

_IN_LINE = {s.value for s in IN_LINE}

Emit = Callable[[str, EventSummary], None]


def register(app: typer.Typer) -> None:
    from outbox.cli.events import (
        ACCOUNT_OPTION,
        DELIVERY_OPTION,
        SINCE_OPTION,
        SOURCE_OPTION,
        STATUS_OPTION,
        TYPE_OPTION,
        UNTIL_OPTION,
        FilterArgs,
        events_app,
    )

    @events_app.command("tail")
    @friendly_errors
    def tail_events(
        status: list[Status] | None = STATUS_OPTION,
        source: list[Source] | None = SOURCE_OPTION,
        event_type: str | None = TYPE_OPTION,
        account: str | None = ACCOUNT_OPTION,
        since: str | None = SINCE_OPTION,
        until: str | None = UNTIL_OPTION,
        delivery: str | None = DELIVERY_OPTION,
        last: int = typer.Option(10, "--last", "-n", min=0, max=1000, help="Rows shown first."),
        follow: bool = typer.Option(
            False, "--follow", "-f", help="Keep printing new events and their outcomes."
        ),
        interval: float = typer.Option(
            1.0, "--interval", min=0.1, help="Seconds between two looks (with --follow)."
        ),
        as_json: bool = JSON_OPTION,
    ) -> None:
        """The latest events, oldest first; with --follow, new ones and their outcomes as
        they happen (Ctrl-C stops). Takes the filters of `events list`."""
        args = FilterArgs(status, source, event_type, account, since, until, delivery)
        settings = get_settings()
        settle = timedelta(seconds=settings.webhook_deadline_seconds + TAIL_SETTLE_MARGIN)
        emit = _json_line if as_json else _text_line
        with open_database(settings) as (_, sessions):
            with sessions() as session:
                tail = EventTail(args.resolve(session, utcnow()), settle)
                shown = tail.start(session, last, emit)
            if not follow:
                if not shown:
                    fail("no events match")
                return
            try:
                tail.follow(sessions, emit, interval)
            except KeyboardInterrupt:
                return


class EventTail:
    """What a tail has read: the low-water id, the rows shown above it, the rows whose
    outcome it awaits (and the status and attempts it last showed for each)."""

    def __init__(self, where: EventFilter, settle: timedelta) -> None:
        self.where = where
        self.settle = settle
        self.low = 0
        self.shown: set[int] = set()
        self.watched: dict[int, tuple[str, int]] = {}

    def start(self, session: Session, last: int, emit: Emit) -> int:
        """Show the `last` newest matching rows, oldest first; returns how many."""
        top = queries.newest_id(session)
        rows = (
            queries.list_events(session, self.where, limit=last, before_id=top + 1) if last else []
        )
        for row in reversed(rows):
            self._show(row, emit)
        self.low = queries.settled_id(session, utcnow() - self.settle)
        # Rows of the settling window not shown (older than the `last` ones) stay unshown.
        self.shown.update(r.id for r in self._matching(session, self.low, top))
        return len(rows)

    def poll(self, session: Session, emit: Emit) -> None:
        """One look: the rows that appeared, then the outcomes of the rows awaited."""
        top = queries.newest_id(session)
        for row in self._matching(session, self.low, top):
            if row.id not in self.shown:
                self._show(row, emit)
        for row in queries.summaries_of(session, list(self.watched)):
            if (row.status, row.attempts) != self.watched[row.id]:
                emit("outcome", row)
                self._await(row)
        self.low = max(self.low, queries.settled_id(session, utcnow() - self.settle))
        self.shown = {i for i in self.shown if i > self.low}

    def follow(
        self, sessions: sessionmaker[Session], emit: Emit, interval: float, *, polls: int = -1
    ) -> None:
        """Poll every `interval` seconds, `polls` times (-1: until interrupted)."""
        while polls != 0:
            time.sleep(interval)
            with sessions() as session:
                self.poll(session, emit)
            polls -= 1

    def _matching(self, session: Session, after: int, top: int) -> Iterable[EventSummary]:
        while after < top:
            rows = queries.events_after(
                session, self.where, after_id=after, up_to_id=top, limit=TAIL_PAGE
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


def _text_line(kind: str, row: EventSummary) -> None:
    when = row.processed_at if kind == "outcome" and row.processed_at else row.received_at
    arrow = "->" if kind == "outcome" else "  "
    line = (
        f"{when:%Y-%m-%d %H:%M:%S}  {row.id:>8}  {row.source:<6}  {row.event_type}  "
        f"{arrow} {row.status}"
    )
    if kind == "outcome" and row.attempts:
        line += f" (attempt {row.attempts})"
    if kind == "new":
        line += f"  {row.delivery_id}"
    if row.last_error and row.status != Status.DONE:
        line += f"  {row.last_error.splitlines()[0][:120]}"
    say(line)


def _json_line(kind: str, row: EventSummary) -> None:
    document: dict[str, Any] = {"seen": kind, **row.as_json()}
    print_json_lines([document])
    import sys

    sys.stdout.flush()
