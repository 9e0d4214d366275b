"""`outbox events replay`: put finished or dead events back to be processed again.

The plan comes from queries.replay_verdicts, which mirrors the guard of
operator_writes.replay; the rows go back in paced batches, the processors rung after each.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from outbox.cli.common import (
    EXIT_FAILED,
    JSON_OPTION,
    confirm_or_fail,
    err_console,
    fail,
    friendly_errors,
    get_settings,
    print_json_lines,
    say,
    shown,
    usage_error,
)
from outbox.cli.event_display import effect_line
from outbox.cli.event_options import (
    ACCOUNT_OPTION,
    DELIVERY_OPTION,
    SINCE_OPTION,
    SOURCE_OPTION,
    STATUS_OPTION,
    TYPE_OPTION,
    UNTIL_OPTION,
    FilterArgs,
    refs_or_filters,
    selected_ids,
)
from outbox.cli.pacing import CHANGED_WHILE_REPLAYING
from outbox.cli.tables import key_column, listing_console, note_column, print_listing, text_column
from outbox.states import IN_LINE, REPLAYABLE, Source, Status

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from outbox.query_results import ReplayVerdict
    from outbox.settings import Settings


@friendly_errors
def replay_events(
    refs: list[str] | None = typer.Argument(
        None, help="Event ids or delivery ids. Or leave out and select with the filters."
    ),
    status: list[Status] | None = STATUS_OPTION,
    source: list[Source] | None = SOURCE_OPTION,
    event_type: str | None = TYPE_OPTION,
    account: str | None = ACCOUNT_OPTION,
    since: str | None = SINCE_OPTION,
    until: str | None = UNTIL_OPTION,
    delivery: str | None = DELIVERY_OPTION,
    limit: int | None = typer.Option(
        None, "--limit", min=1, help="Replay at most this many of the matches (oldest first)."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print the plan (and the effects already applied), change nothing."
    ),
    rate: float | None = typer.Option(
        None, "--rate", min=0.1, help="Events per second put back (default: REPLAY_RATE, 20)."
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask before a bulk replay."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Put done, dead or skipped events back to be processed again; effects are never doubled.

    Name events by id, or select them with filters (e.g. --status dead --source stripe
    --since 2d). Rows still pending or processing are refused: they are already in play.
    Purged rows are refused: their body is gone.
    """
    from domain.effects import effects_of_event
    from outbox import queries
    from outbox.cli.database import open_database
    from outbox.driver.dbapi import of_session
    from outbox.query_results import ReplayVerdict

    args = FilterArgs(status, source, event_type, account, since, until, delivery)
    refs_or_filters(
        refs, args, "name the events to replay: ids, or filters such as --status dead --since 2d"
    )
    in_play = [s.value for s in status or () if s in IN_LINE]
    if in_play:
        usage_error(
            f"--status {in_play[0]}: those rows are already waiting to be processed; "
            f"replay takes {', '.join(s.value for s in REPLAYABLE)}"
        )
    settings = get_settings()
    with open_database(settings) as (_, sessions):
        with sessions() as session:
            db = of_session(session)
            ids, unresolved = selected_ids(
                db, refs, args, limit=limit, statuses=tuple(s.value for s in REPLAYABLE)
            )
            verdicts = queries.replay_verdicts(db, ids)
            if dry_run:
                plans = [
                    (v, effects_of_event(session, v.id) if v.replayable else []) for v in verdicts
                ]
        if not verdicts and not unresolved:
            fail("no events match")
        if dry_run:
            _print_plan(plans, unresolved, as_json)
            _exit_if_refused([v for v in verdicts if not v.replayable], unresolved)
            return
        todo = [v.id for v in verdicts if v.replayable]
        if todo and not refs and len(todo) > 1 and not yes:
            _confirm(len(todo))
        put_back, ring_notes = _replay_paced(settings, sessions, todo, rate or settings.replay_rate)
    changed = [v for v in verdicts if v.replayable and v.id not in put_back]
    refused = [v for v in verdicts if not v.replayable] + [
        ReplayVerdict(
            v.id,
            v.delivery_id,
            v.event_type,
            v.status,
            CHANGED_WHILE_REPLAYING,
        )
        for v in changed
    ]
    _report_replay(verdicts, put_back, refused, unresolved, ring_notes, as_json)
    _exit_if_refused(refused, unresolved)


def _confirm(count: int) -> None:
    confirm_or_fail(f"Replay {count} events?", "replay cancelled: nothing replayed")


def _replay_paced(
    settings: Settings, sessions: sessionmaker[Session], ids: list[int], rate: float
) -> tuple[set[int], list[str]]:
    """pacing.replay_paced, with a progress bar on stderr."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from outbox.cli.pacing import replay_paced

    progress = Progress(
        TextColumn("replaying"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
        disable=len(ids) <= 1,
    )
    with progress:
        task = progress.add_task("replay", total=len(ids))
        return replay_paced(
            settings,
            sessions,
            ids,
            rate,
            advanced=lambda batch, _: progress.advance(task, len(batch)),
        )


def _print_plan(
    plans: list[tuple[ReplayVerdict, list[dict[str, Any]]]],
    unresolved: list[str],
    as_json: bool,
) -> None:
    if as_json:
        print_json_lines(
            {
                "id": v.id,
                "delivery_id": v.delivery_id,
                "event_type": v.event_type,
                "status": v.status,
                "action": "replay" if v.replayable else "refuse",
                "reason": v.refusal,
                "effects_applied": effects,
            }
            for v, effects in plans
        )
        for message in unresolved:
            err_console.print(f"[red]unknown:[/red] {shown(message)}", highlight=False)
        return
    from rich.text import Text

    console = listing_console()
    replayable = [p for p in plans if p[0].replayable]
    console.print(
        f"[bold]dry run[/bold]: would replay {len(replayable)} event(s), "
        f"refuse {len(plans) - len(replayable) + len(unresolved)}; nothing changed.",
        highlight=False,
    )
    rows = [
        (
            str(v.id),
            v.event_type or "",
            v.status or "",
            "replay"
            if v.replayable
            else Text.from_markup(f"[red]refuse[/red]: {shown(v.refusal)}"),
            "; ".join(effect_line(e) for e in effects) or "none",
        )
        for v, effects in plans
    ]
    columns = (
        key_column("id", right=True),
        text_column("type", least=12),
        key_column("status"),
        note_column("plan", least=8),
        note_column("already applied (kept, not applied again)", least=8),
    )
    print_listing(columns, rows, console)
    for message in unresolved:
        console.print(f"[red]unknown[/red]: {shown(message)}", highlight=False)


def _report_replay(
    verdicts: list[ReplayVerdict],
    put_back: set[int],
    refused: list[ReplayVerdict],
    unresolved: list[str],
    ring_notes: list[str],
    as_json: bool,
) -> None:
    if as_json:
        rows: list[dict[str, Any]] = [
            {"id": v.id, "delivery_id": v.delivery_id, "outcome": "replayed", "reason": None}
            for v in verdicts
            if v.id in put_back
        ]
        rows += [
            {"id": v.id, "delivery_id": v.delivery_id, "outcome": "refused", "reason": v.refusal}
            for v in refused
        ]
        print_json_lines(sorted(rows, key=lambda r: r["id"]))
    else:
        if put_back:
            say(f"replayed {len(put_back)} event(s): pending again, due now, attempts reset")
        else:
            say("nothing replayed")
    out = err_console if as_json else listing_console()
    for note in ring_notes:
        out.print(shown(note), highlight=False)
    for v in refused:
        out.print(f"[red]refused[/red] {v.id}: {shown(v.refusal)}", highlight=False)
    for message in unresolved:
        out.print(f"[red]unknown[/red]: {shown(message)}", highlight=False)


def _exit_if_refused(refused: list[ReplayVerdict], unresolved: list[str]) -> None:
    if refused or unresolved:
        count = len(refused) + len(unresolved)
        err_console.print(f"[red]error:[/red] {count} event(s) not replayed (see above)")
        raise typer.Exit(EXIT_FAILED)
