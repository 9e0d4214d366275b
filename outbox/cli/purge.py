"""`outbox purge --older-than 90d`: remove old finished events, keeping each delivery known.

SQLite and an unpartitioned Postgres: the bodies of old done and skipped rows go, in
batches, and each row stays as a tombstone. A partitioned Postgres: the partitions entirely
older than the cut-off go whole (outbox/retention.py), their unfinished rows kept, and the
delivery index stays as the tombstones.
"""

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

    from sqlalchemy import Engine
    from sqlalchemy.orm import Session, sessionmaker

    from outbox.query_results import PurgePreview
    from outbox.retention import Retention

#: The name of the default partition (outbox/partitions.py), without importing SQLAlchemy.
DEFAULT_PARTITION = "webhook_events_default"

#: The youngest a purged body may be: a purged event can no longer be replayed, so a
#: slip of the finger ("90m" for "90d") must not cost the last day's bodies.
MIN_AGE = timedelta(days=1)
#: Rows whose bodies one transaction removes: short transactions, so the ingress and the
#: workers never wait long on a purge, and an interrupted purge keeps what it did.
BATCH_ROWS = 1000
#: Rows of the default partition one transaction deletes (a partitioned Postgres) is the same.
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
    "partitions": (
        "A dropped partition's files go back to the disk at once; the default partition's "
        "deleted rows are reused once autovacuum has passed over it."
    ),
}


def register(app: typer.Typer) -> None:
    app.command()(purge)


@friendly_errors
def purge(
    older_than: str = typer.Option(
        ..., "--older-than", help="Age of the events that go: 90d, 12w (at least 1d)."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Count what would go, change nothing."),
    yes: bool = typer.Option(
        False, "--yes", "-y", help=f"Do not ask before removing over {ASK_ABOVE_ROWS} events."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Remove the done and skipped events older than --older-than.

    Pending, processing and dead events are always kept, and a very late duplicate
    delivery is still recognised and never applied again. Purged events cannot be
    replayed.

    SQLite, and Postgres before `outbox migrate` has partitioned the table: the bodies go,
    1000 rows a transaction, and each row stays as a tombstone (source, delivery id, type,
    times).

    Postgres with partitions: each partition whose whole range is older than the cut-off
    is detached and dropped, oldest first; its pending, processing and dead rows are moved
    into the default partition first, with their ids. The delivery index keeps every
    delivery. Finished rows of the default partition older than the cut-off are deleted,
    1000 a transaction. --dry-run gives the partitions' row counts as the statistics
    estimate them, and their unfinished rows exactly.
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
        if preview.by_partitions:
            _by_partitions(
                engine, preview, cutoff=cutoff, dry_run=dry_run, yes=yes, as_json=as_json
            )
            return
        purged = preview.purgeable
        if not dry_run and purged:
            _confirm(purged, f"the bodies of {purged} events", cutoff, yes)
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
                    "by_partitions": False,
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


def _confirm(rows: int, what: str, cutoff: datetime, yes: bool) -> None:
    """Ask before removing over ASK_ABOVE_ROWS events (`what`: how they are named)."""
    if rows > ASK_ABOVE_ROWS and not yes:
        confirm_or_fail(
            f"Remove {what} received before {cutoff:%Y-%m-%d %H:%M} UTC? "
            "They can no longer be replayed.",
            "purge cancelled: nothing removed",
        )


def _by_partitions(
    engine: Engine,
    preview: PurgePreview,
    *,
    cutoff: datetime,
    dry_run: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """A partitioned Postgres: the partitions older than the cut-off go whole."""
    from outbox.retention import Retention, purge_by_partitions

    nothing = not (preview.partitions or preview.leftovers or preview.default_rows)
    if dry_run:
        _tell_plan(preview, cutoff, as_json)
    else:
        done = Retention()
        if not nothing:
            # A partition never analysed has no estimate: ask, whatever the others add up to.
            unknown = any(p.estimated_rows is None for p in preview.partitions)
            rows = max(preview.purgeable, ASK_ABOVE_ROWS + 1 if unknown else 0)
            what = f"about {preview.purgeable} events" + (
                " (and partitions never analysed)" if unknown else ""
            )
            _confirm(rows, what, cutoff, yes)
            done = purge_by_partitions(engine, cutoff, batch=BATCH_ROWS)
            nothing = not (done.partitions or done.leftovers or done.default_rows)
        _tell_done(done, preview, cutoff, as_json)
    if nothing:
        fail("nothing to purge")


def _tell_plan(preview: PurgePreview, cutoff: datetime, as_json: bool) -> None:
    if as_json:
        print_json_lines(
            [
                {
                    "dry_run": True,
                    "older_than": cutoff.isoformat(),
                    "purged": 0,
                    "would_purge": preview.purgeable,
                    "rows_estimated": True,
                    "unfinished_left_alone": preview.unfinished_older,
                    "by_partitions": True,
                    "partitions": [
                        {
                            "name": p.name,
                            "lower": p.lower.isoformat() if p.lower else None,
                            "upper": p.upper.isoformat(),
                            "estimated_rows": p.estimated_rows,
                            "unfinished_kept": p.unfinished,
                        }
                        for p in preview.partitions
                    ],
                    "leftovers": list(preview.leftovers),
                    "default_rows": preview.default_rows,
                }
            ]
        )
        return
    say(
        f"would remove {len(preview.partitions)} partition(s) of events received before "
        f"{cutoff:%Y-%m-%d %H:%M} UTC, about {preview.purgeable} row(s) in all "
        "(partition rows as the statistics estimate them)"
    )
    for p in preview.partitions:
        rows = (
            "rows unknown (never analysed)"
            if p.estimated_rows is None
            else (f"~{p.estimated_rows} row(s) (estimate)")
        )
        say(f"  {p.name} [{_bound(p.lower)}, {_bound(p.upper)}): {rows}, {_kept(p.unfinished)}")
    for name in preview.leftovers:
        say(f"  {name}: detached by a purge that stopped, dropped first")
    if preview.default_rows:
        say(f"  {DEFAULT_PARTITION}: {preview.default_rows} finished row(s) deleted")
    if preview.unfinished_older:
        say(
            f"kept: {preview.unfinished_older} older event(s) not finished (pending, "
            f"processing or dead); those of a removed partition move to {DEFAULT_PARTITION}"
        )


def _tell_done(done: Retention, preview: PurgePreview, cutoff: datetime, as_json: bool) -> None:
    if as_json:
        print_json_lines(
            [
                {
                    "dry_run": False,
                    "older_than": cutoff.isoformat(),
                    "purged": done.rows,
                    "would_purge": None,
                    "unfinished_left_alone": preview.unfinished_older,
                    "by_partitions": True,
                    "partitions_removed": len(done.partitions) + len(done.leftovers),
                    "rows_removed": done.rows,
                    "unfinished_kept": done.kept,
                    "partitions": [
                        {
                            "name": p.name,
                            "rows": p.rows,
                            "unfinished_kept": p.moved,
                            "failures": p.failures,
                        }
                        for p in done.partitions + done.leftovers
                    ],
                    "default_rows": done.default_rows,
                }
            ]
        )
        return
    removed = len(done.partitions) + len(done.leftovers)
    say(
        f"removed {removed} partition(s) and {done.rows} row(s) received before "
        f"{cutoff:%Y-%m-%d %H:%M} UTC; kept {done.kept} unfinished row(s), moved to "
        f"{DEFAULT_PARTITION} (deliveries stay known)"
    )
    for p in done.leftovers:
        say(f"  {p.name}: {p.rows} row(s) (detached by a purge that stopped)")
    for p in done.partitions:
        say(f"  {p.name}: {p.rows} row(s), {_kept(p.moved)}")
    if done.default_rows:
        say(f"  {DEFAULT_PARTITION}: {done.default_rows} finished row(s) deleted")
    say(SPACE_RECLAIMED["partitions"])


def _kept(unfinished: dict[str, int]) -> str:
    if not unfinished:
        return "none unfinished"
    counts = ", ".join(f"{n} {status}" for status, n in sorted(unfinished.items()))
    return f"kept {counts}"


def _bound(moment: datetime | None) -> str:
    return "MINVALUE" if moment is None else f"{moment:%Y-%m-%d %H:%M}"


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
