"""`outbox purge --older-than 90d`: drop old bodies of finished events, keeping tombstones."""

from __future__ import annotations

from datetime import timedelta

import typer

from outbox import events as queries
from outbox import store
from outbox.cli.common import JSON_OPTION, fail, friendly_errors, print_json_lines, say, usage_error
from outbox.cli.database import open_database
from outbox.cli.timespec import parse_duration
from outbox.db import transaction, utcnow
from outbox.settings import get_settings

#: The youngest a purged body may be: a purged event can no longer be replayed, so a
#: slip of the finger ("90m" for "90d") must not cost the last day's bodies.
MIN_AGE = timedelta(days=1)


def register(app: typer.Typer) -> None:
    app.command()(purge)


@friendly_errors
def purge(
    older_than: str = typer.Option(
        ..., "--older-than", help="Age of the events whose bodies go: 90d, 12w (at least 1d)."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Count what would go, change nothing."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Remove the bodies of done and skipped events older than --older-than.

    Each row stays as a tombstone (source, delivery id, type, times), so a very late
    duplicate delivery is still recognised and never applied again. Pending, processing
    and dead events are never touched. Purged events cannot be replayed.
    """
    age = parse_duration(older_than, "--older-than")
    if age < MIN_AGE:
        usage_error(f"--older-than {older_than} is under 1d; purged events cannot be replayed")
    now = utcnow()
    cutoff = now - age
    settings = get_settings()
    with open_database(settings) as (_, sessions):
        with sessions() as session:
            preview = queries.purge_preview(session, older_than=cutoff)
        purged = preview.purgeable
        if not dry_run and purged:
            with transaction(sessions) as session:
                purged = store.purge(session, older_than=cutoff, now=now)
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
    if not purged:
        fail("nothing to purge")
