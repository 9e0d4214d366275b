"""`outbox purge --older-than 90d`: drop old bodies of finished events, keeping tombstones."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import typer

from outbox.cli.common import (
    JSON_OPTION,
    confirm_or_fail,
    err_console,
    fail,
    friendly_errors,
    get_settings,
    print_json_lines,
    say,
    usage_error,
)
from outbox.cli.timespec import parse_duration

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy.orm import Session, sessionmaker

#: The youngest a purged body may be: a purged event can no longer be replayed, so a
#: slip of the finger ("90m" for "90d") must not cost the last day's bodies.
MIN_AGE = timedelta(days=1)
#: Rows whose bodies one transaction removes: short transactions, so the ingress and the
#: workers never wait long on a purge, and an interrupted purge keeps what it did.
BATCH_ROWS = 1000
#: A purge of more rows than this asks first (unless --yes): purged events cannot be replayed.
ASK_ABOVE_ROWS = 1000

#: How each database gives the space of removed bodies back (said after a purge).
SPACE_RECLAIMED = {
    "sqlite": (
        "SQLite keeps the freed pages in the database file and reuses them for new rows; "
        "to shrink the file, stop the service and run `sqlite3 FILE 'VACUUM'` "
        "(it needs as much free disk as the file)."
    ),
    "postgresql": (
        "Postgres reuses the space once autovacuum has passed over the table (or run "
        "`VACUUM webhook_events`); the files do not shrink: `VACUUM FULL webhook_events` "
        "returns the space to the disk but locks the table while it rewrites it."
    ),
}


def register(app: typer.Typer) -> None:
    app.command()(purge)


@friendly_errors
def purge(
    older_than: str = typer.Option(
        ..., "--older-than", help="Age of the events whose bodies go: 90d, 12w (at least 1d)."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Count what would go, change nothing."),
    yes: bool = typer.Option(
        False, "--yes", "-y", help=f"Do not ask before removing over {ASK_ABOVE_ROWS} bodies."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Remove the bodies of done and skipped events older than --older-than.

    Each row stays as a tombstone (source, delivery id, type, times), so a very late
    duplicate delivery is still recognised and never applied again. Pending, processing
    and dead events are never touched. Purged events cannot be replayed. The bodies go
    in batches of 1000 rows, one transaction each.
    """
    from outbox.cli.database import open_database
    from outbox.db import utcnow
    from outbox.driver.dbapi import of_session
    from outbox.queries import purge_preview

    age = parse_duration(older_than, "--older-than")
    if age < MIN_AGE:
        usage_error(f"--older-than {older_than} is under 1d; purged events cannot be replayed")
    now = utcnow()
    cutoff = now - age
    settings = get_settings()
    with open_database(settings) as (engine, sessions):
        with sessions() as session:
            preview = purge_preview(of_session(session), older_than=cutoff)
        purged = preview.purgeable
        if not dry_run and purged:
            if purged > ASK_ABOVE_ROWS and not yes:
                confirm_or_fail(
                    f"Remove the bodies of {purged} events received before "
                    f"{cutoff:%Y-%m-%d %H:%M} UTC? They can no longer be replayed.",
                    "purge cancelled: nothing removed",
                )
            purged = _purge_in_batches(sessions, cutoff=cutoff, now=now, expected=purged)
        database = engine.dialect.name
    if as_json:
        print_json_lines(
            [
                {
                    "dry_run": dry_run,
                    "older_than": cutoff.isoformat(),
                    "purged": 0 if dry_run else purged,
                    "would_purge": purged if dry_run else None,
                    "unfinished_left_alone": preview.unfinished_older,
                }
            ]
        )
    else:
        verb = "would remove" if dry_run else "removed"
        say(
            f"{verb} the bodies of {purged} done/skipped event(s) received before "
            f"{cutoff:%Y-%m-%d %H:%M} UTC (tombstones kept)"
        )
        if preview.unfinished_older:
            say(
                f"left alone: {preview.unfinished_older} older event(s) not finished "
                "(pending, processing or dead)"
            )
        if purged and not dry_run and database in SPACE_RECLAIMED:
            say(SPACE_RECLAIMED[database])
    if not purged:
        fail("nothing to purge")


def _purge_in_batches(
    sessions: sessionmaker[Session], *, cutoff: datetime, now: datetime, expected: int
) -> int:
    """Remove the bodies BATCH_ROWS rows a transaction, with a progress bar on stderr;
    how many went (rows that became purgeable meanwhile included)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from outbox import operator_writes
    from outbox.db import transaction

    progress = Progress(
        TextColumn("purging"),
        BarColumn(),
        MofNCompleteColumn(),
        console=err_console,
        disable=expected <= BATCH_ROWS,
    )
    purged = 0
    with progress:
        task = progress.add_task("purge", total=expected)
        while True:
            with transaction(sessions) as session:
                removed = operator_writes.purge(
                    session, older_than=cutoff, now=now, limit=BATCH_ROWS
                )
            purged += removed
            progress.update(task, completed=min(purged, expected))
            if removed < BATCH_ROWS:
                return purged
