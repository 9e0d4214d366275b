"""`outbox events retry`: make waiting events due now and ring the processors, for an event
that waits on something just fixed (an account linked, a pack added)."""

from __future__ import annotations

from datetime import UTC, datetime

import typer

from outbox.cli.common import (
    EXIT_FAILED,
    JSON_OPTION,
    confirm_or_fail,
    err_console,
    error_line,
    fail,
    friendly_errors,
    get_settings,
    print_json_lines,
    say,
    shown,
)
from outbox.cli.event_options import (
    ACCOUNT_OPTION,
    DELIVERY_OPTION,
    SINCE_OPTION,
    SOURCE_OPTION,
    TYPE_OPTION,
    UNTIL_OPTION,
    FilterArgs,
    refs_or_filters,
    selected_ids,
)
from outbox.cli.tables import listing_console
from outbox.states import Source, Status


@friendly_errors
def retry_events(
    refs: list[str] | None = typer.Argument(
        None, help="Event ids or delivery ids. Or leave out and select with the filters."
    ),
    source: list[Source] | None = SOURCE_OPTION,
    event_type: str | None = TYPE_OPTION,
    account: str | None = ACCOUNT_OPTION,
    since: str | None = SINCE_OPTION,
    until: str | None = UNTIL_OPTION,
    delivery: str | None = DELIVERY_OPTION,
    limit: int | None = typer.Option(
        None, "--limit", min=1, help="Retry at most this many of the matches (oldest first)."
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask before a bulk retry."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Make pending events due now (new, or waiting for their next try) and ring the processors.

    For an event that waits on something just fixed (an account linked, a pack added):
    its attempts are kept. Name events by id, or select pending ones with filters (e.g.
    --type 'invoice.*' --account octo-org). Finished or dead events are refused: replay
    them with `outbox events replay`.
    """
    from outbox import operator_writes, queries
    from outbox.cli.database import open_database
    from outbox.cli.ringing import ProcessorsBell
    from outbox.db import transaction
    from outbox.driver.dbapi import of_session

    args = FilterArgs(None, source, event_type, account, since, until, delivery)
    refs_or_filters(
        refs, args, "name the events to retry: ids, or filters such as --type 'invoice.*'"
    )
    settings = get_settings()
    with open_database(settings) as (_, sessions):
        with sessions() as session:
            db = of_session(session)
            ids, unresolved = selected_ids(
                db, refs, args, limit=limit, statuses=(Status.PENDING.value,)
            )
            verdicts = queries.replay_verdicts(db, ids)
        if not verdicts and not unresolved:
            fail("no pending events match")
        todo = [v.id for v in verdicts if v.status == Status.PENDING.value]
        if not refs and len(todo) > 1 and not yes:
            confirm_or_fail(f"Retry {len(todo)} events now?", "retry cancelled: nothing changed")
        with transaction(sessions) as session:
            due = set(operator_writes.retry_now(session, todo, now=datetime.now(UTC)))
        rung = ProcessorsBell(settings).ring(sorted(due))
    refused = {v.id: _retry_refusal(v.status) for v in verdicts if v.id not in due}
    if as_json:
        print_json_lines(
            {
                "id": v.id,
                "delivery_id": v.delivery_id,
                "outcome": "due now" if v.id in due else "refused",
                "reason": refused.get(v.id),
            }
            for v in verdicts
        )
    elif due:
        say(f"{len(due)} event(s) due now (attempts kept)")
    out = err_console if as_json else listing_console()
    if rung.note:
        out.print(shown(rung.note), highlight=False)
    for event_id, reason in refused.items():
        out.print(f"[red]refused[/red] {event_id}: {shown(reason)}", highlight=False)
    for message in unresolved:
        out.print(f"[red]unknown[/red]: {shown(message)}", highlight=False)
    if refused or unresolved:
        error_line(f"{len(refused) + len(unresolved)} event(s) not retried (see above)")
        raise typer.Exit(EXIT_FAILED)


def _retry_refusal(status: str | None) -> str:
    if status is None:
        return "no such event"
    if status == Status.PENDING.value:
        return "its status changed meanwhile (a worker took it)"
    if status == Status.PROCESSING.value:
        return "being processed now"
    return f"status {status}: it is not waiting; `outbox events replay` puts it back"
