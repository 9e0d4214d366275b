"""`outbox events list | show | replay | retry | stats | tail`: find, inspect and replay
stored webhooks.

Reads are the named ones of outbox/queries.py, writes those of outbox/operator_writes.py;
nothing here is SQL. The selecting options are in event_options.py, the output in
event_display.py, replay and retry in their own modules.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import typer

from outbox.cli import event_replay, event_retry, tail
from outbox.cli.common import (
    INT64_MAX,
    JSON_OPTION,
    fail,
    friendly_errors,
    get_settings,
    id_argument,
    print_json_lines,
    usage_error,
)
from outbox.cli.event_display import detail_json, print_detail, print_events, print_stats
from outbox.cli.event_options import (
    ACCOUNT_OPTION,
    DELIVERY_OPTION,
    SINCE_OPTION,
    SOURCE_OPTION,
    STATUS_OPTION,
    TYPE_OPTION,
    UNTIL_OPTION,
    FilterArgs,
    refuse_unusable_id,
)
from outbox.cli.tables import listing_console
from outbox.reader_settings import reader_settings
from outbox.states import Source, Status

if TYPE_CHECKING:
    from outbox.query_results import EventDetail

events_app = typer.Typer(
    name="events",
    help="Find, inspect and replay stored webhook events.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(events_app)


@events_app.command("list")
@friendly_errors
def list_events(
    status: list[Status] | None = STATUS_OPTION,
    source: list[Source] | None = SOURCE_OPTION,
    event_type: str | None = TYPE_OPTION,
    account: str | None = ACCOUNT_OPTION,
    since: str | None = SINCE_OPTION,
    until: str | None = UNTIL_OPTION,
    delivery: str | None = DELIVERY_OPTION,
    limit: int = typer.Option(50, "--limit", min=1, max=1000, help="Rows per page."),
    before_id_text: str | None = typer.Option(
        None,
        "--before-id",
        metavar="ID",
        help="Page: rows older than this id (the last one shown).",
    ),
    page_text: str | None = typer.Option(
        None, "--page", metavar="N", help="Page number, 1 = newest."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """List stored events, newest first, one page at a time."""
    from outbox import queries
    from outbox.cli.database import open_reads

    if before_id_text is not None and page_text is not None:
        usage_error("give --before-id or --page, not both")
    before_id = id_argument(before_id_text, "--before-id") if before_id_text else None
    page = id_argument(page_text, "--page") if page_text else None
    if page is not None and (page - 1) * limit > INT64_MAX:
        usage_error(f"--page {page} is past the last page of any table")
    args = FilterArgs(status, source, event_type, account, since, until, delivery)
    with open_reads(reader_settings()) as db:
        where = args.resolve(db, datetime.now(UTC))
        offset = ((page or 1) - 1) * limit
        found = queries.list_page(db, where, limit=limit, before_id=before_id, offset=offset)
    rows = found.rows
    if not found.complete:
        say_partial(found.searched_since)
    if not rows:
        fail("no events match" + (" (past the last page)" if before_id or page else ""))
    if as_json:
        print_json_lines(r.as_json() for r in rows)
        return
    console = listing_console()
    print_events(console, rows)
    if len(rows) == limit:
        console.print(
            f"[dim]{limit} shown; older: --before-id {rows[-1].id}"
            f" (or --page {(page or 1) + 1})[/dim]",
            highlight=False,
        )


def say_partial(searched_since: datetime | None) -> None:
    """On stderr (the rows stay the output): the listing stopped before its page was full."""
    from outbox.cli.common import err_console

    if searched_since is None:
        err_console.print("searched only the newest rows: older partitions were not read in time")
        return
    since = f"{searched_since:%Y-%m-%dT%H:%M:%S}"
    err_console.print(
        f"searched only the rows received since {since} UTC: older partitions were not read"
        f" in time; --until {since} looks further back",
        highlight=False,
        markup=False,
    )


@events_app.command("show")
@friendly_errors
def show_event(
    ref: str = typer.Argument(..., help="The event's id, or its delivery id / Stripe event id."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Everything about one event: headers, payload, attempts with errors, effects."""
    from domain.effects import effects_of_event
    from outbox.cli.database import open_database
    from outbox.driver.dbapi import of_session
    from outbox.queries import find_event
    from outbox.query_results import AmbiguousEvent, EventNotFound

    # The effects are the domain's rows, read through its session; the event is read in
    # the same transaction.
    with open_database(get_settings()) as (_, sessions), sessions() as session:
        try:
            detail = find_event(of_session(session), ref)
        except (EventNotFound, AmbiguousEvent) as exc:
            refuse_unusable_id(ref)
            fail(str(exc))
        effects = effects_of_event(session, detail.summary.id)
    payload, payload_error = _decoded(detail)
    if as_json:
        print_json_lines([detail_json(detail, payload, payload_error, effects)])
        return
    print_detail(listing_console(), detail, payload, payload_error, effects)


def _decoded(detail: EventDetail) -> tuple[dict[str, Any] | None, str | None]:
    from outbox.payload import payload_to_show

    content_type = detail.headers.get("content-type")
    return payload_to_show(detail.raw_body, content_type, detail.summary.purged_at)


events_app.command("replay")(event_replay.replay_events)
events_app.command("retry")(event_retry.retry_events)


@events_app.command("stats")
@friendly_errors
def stats(as_json: bool = JSON_OPTION) -> None:
    """Counts by source and status, the processing lag, and the dead of the last day."""
    from outbox.cli.database import open_reads
    from outbox.queries import event_stats

    with open_reads(reader_settings()) as db:
        result = event_stats(db, now=datetime.now(UTC))
    if as_json:
        print_json_lines([result.as_json()])
        return
    print_stats(listing_console(), result)


events_app.command("tail")(tail.tail_events)
