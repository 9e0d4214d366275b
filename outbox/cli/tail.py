"""`outbox events tail`: new events and their outcomes as they happen (outbox/event_tail.py
reads them; this module prints them)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import typer

from outbox.cli.common import (
    JSON_OPTION,
    fail,
    friendly_errors,
    print_json_lines,
    say,
)
from outbox.cli.event_options import (
    ACCOUNT_OPTION,
    DELIVERY_OPTION,
    SINCE_OPTION,
    SOURCE_OPTION,
    STATUS_OPTION,
    TYPE_OPTION,
    UNTIL_OPTION,
    FilterArgs,
)
from outbox.reader_settings import reader_settings
from outbox.states import Source, Status

if TYPE_CHECKING:
    from outbox.query_results import EventSummary

#: Seconds a poll looks back for rows committed out of id order, past the webhook deadline.
TAIL_SETTLE_MARGIN = 1.0


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
    from outbox.cli.database import open_reads
    from outbox.event_tail import EventTail

    args = FilterArgs(status, source, event_type, account, since, until, delivery)
    settings = reader_settings()
    settle = timedelta(seconds=settings.webhook_deadline_seconds + TAIL_SETTLE_MARGIN)
    emit = _json_line if as_json else _text_line
    with open_reads(settings) as db:
        tail = EventTail(args.resolve(db, datetime.now(UTC)), settle)
        shown = tail.start(db, last, emit)
        if not follow:
            if not shown:
                fail("no events match")
            return
        try:
            tail.follow(db, emit, interval)
        except KeyboardInterrupt:
            return


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
    sys.stdout.flush()
