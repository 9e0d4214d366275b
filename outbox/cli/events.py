"""`outbox events list | show | replay | stats`: find, inspect and replay stored webhooks.

Reads go through outbox/events.py, writes through outbox/store.py; nothing here is SQL.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import typer

from outbox.cli.common import (
    EXIT_FAILED,
    INT64_MAX,
    JSON_OPTION,
    SafeConsole,
    SafeTable,
    account_ref,
    confirm_or_fail,
    err_console,
    error_line,
    fail,
    friendly_errors,
    id_argument,
    print_json_lines,
    say,
    shown,
    usage_error,
)
from outbox.cli.tables import (
    PIPED_WIDTH,
    key_column,
    listing_console,
    listing_table,
    note_column,
    text_column,
)
from outbox.cli.timespec import DURATION_HELP, parse_moment
from outbox.states import IN_LINE, Source, Status

# The database, the store and the queries are imported inside the commands: `outbox --help`
# and `outbox events list` on SQLite must not pay for psycopg, redis or the domain.
if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from outbox import events as queries
    from outbox.events import EventFilter, EventSummary, ReplayVerdict
    from outbox.settings import Settings

events_app = typer.Typer(
    name="events",
    help="Find, inspect and replay stored webhook events.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(events_app)


# --- the filter every listing and bulk replay takes -------------------------------------------

STATUS_OPTION = typer.Option(None, "--status", help="Only this status (repeatable).")
SOURCE_OPTION = typer.Option(None, "--source", help="Only this source (repeatable).")
TYPE_OPTION = typer.Option(
    None, "--type", help="Event type; * matches anything: 'invoice.*', '*.deleted'."
)
ACCOUNT_OPTION = typer.Option(None, "--account", help="Account: numeric GitHub id, or login.")
SINCE_OPTION = typer.Option(None, "--since", help=f"Received at or after: {DURATION_HELP}.")
UNTIL_OPTION = typer.Option(None, "--until", help=f"Received before: {DURATION_HELP}.")
DELIVERY_OPTION = typer.Option(
    None, "--delivery", help="GitHub delivery id or Stripe event id (evt_…)."
)


@dataclass(frozen=True)
class FilterArgs:
    """The filter options as typed on the command line, before they are understood."""

    status: Sequence[Status] | None = None
    source: Sequence[Source] | None = None
    event_type: str | None = None
    account: str | None = None
    since: str | None = None
    until: str | None = None
    delivery: str | None = None

    @property
    def given(self) -> bool:
        return any(
            [
                self.status,
                self.source,
                self.event_type,
                self.account,
                self.since,
                self.until,
                self.delivery,
            ]
        )

    def resolve(self, session: Session, now: datetime) -> EventFilter:
        from outbox.events import EventFilter

        since = parse_moment(self.since, "--since", now=now) if self.since else None
        until = parse_moment(self.until, "--until", now=now) if self.until else None
        if since and until and since >= until:
            usage_error(
                f"--since ({since:%Y-%m-%d %H:%M}) is not before --until ({until:%Y-%m-%d %H:%M})"
            )
        return EventFilter(
            statuses=tuple(s.value for s in self.status or ()),
            sources=tuple(s.value for s in self.source or ()),
            event_type=self.event_type,
            account_id=_account_id(session, self.account) if self.account else None,
            since=since,
            until=until,
            delivery_id=self.delivery,
        )


def _account_id(session: Session, ref: str) -> int:
    """The account's id: a known id or login, or a numeric id no account row has (yet)."""
    from domain.accounts import find_account

    ref = account_ref(ref)
    account = find_account(session, ref)
    if account is not None:
        return int(account.id)
    if ref.isdigit():  # events may name an account before it exists here
        return int(ref)
    fail(f"no account with login or id {ref!r}")


# --- list -------------------------------------------------------------------------------------


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
    from outbox import events as queries
    from outbox.cli.database import open_database
    from outbox.db import utcnow
    from outbox.settings import get_settings

    if before_id_text is not None and page_text is not None:
        usage_error("give --before-id or --page, not both")
    before_id = id_argument(before_id_text, "--before-id") if before_id_text else None
    page = id_argument(page_text, "--page") if page_text else None
    if page is not None and (page - 1) * limit > INT64_MAX:
        usage_error(f"--page {page} is past the last page of any table")
    args = FilterArgs(status, source, event_type, account, since, until, delivery)
    settings = get_settings()
    with open_database(settings) as (_, sessions), sessions() as session:
        where = args.resolve(session, utcnow())
        offset = ((page or 1) - 1) * limit
        rows = queries.list_events(session, where, limit=limit, before_id=before_id, offset=offset)
    if not rows:
        fail("no events match" + (" (past the last page)" if before_id or page else ""))
    if as_json:
        print_json_lines(r.as_json() for r in rows)
        return
    console = _stdout()
    console.print(_events_table(rows, console.width), highlight=False)
    if len(rows) == limit:
        console.print(
            f"[dim]{limit} shown; older: --before-id {rows[-1].id}"
            f" (or --page {(page or 1) + 1})[/dim]",
            highlight=False,
        )


def _stdout() -> SafeConsole:
    return listing_console()


#: Terminals narrower than this get the received time without the year and seconds.
FULL_TIME_WIDTH = 120

_EVENT_COLUMNS = (
    key_column("id", right=True),
    text_column("received", least=11),
    text_column("source", least=6),
    text_column("type", least=12),
    key_column("status"),
    key_column("tries", right=True),
    text_column("delivery", least=10),
    key_column("account", right=True),
    note_column("error / note"),
)


def _events_table(rows: Sequence[EventSummary], width: int = PIPED_WIDTH) -> SafeTable:
    """One event a line; at 80 columns the id, status, tries and account stay whole, and
    the error, then the delivery id and the type, are cut (tables.py)."""
    from rich.text import Text

    moment = "%Y-%m-%d %H:%M:%S" if width >= FULL_TIME_WIDTH else "%m-%d %H:%M"
    return listing_table(
        _EVENT_COLUMNS,
        [
            (
                str(r.id),
                f"{r.received_at:{moment}}",
                r.source + (" (backfilled)" if r.backfilled else ""),
                r.event_type,
                Text.from_markup(_status_text(r.status, r.purged_at)),
                str(r.attempts),
                r.delivery_id,
                str(r.account_id) if r.account_id is not None else "",
                (r.last_error or "").splitlines()[0] if r.last_error else "",
            )
            for r in rows
        ],
        width=width,
    )


_STATUS_STYLE = {"dead": "red", "pending": "yellow", "processing": "cyan", "done": "green"}


def _status_text(status: str, purged_at: datetime | None) -> str:
    """The status as markup."""
    style = _STATUS_STYLE.get(status, "")
    text = f"[{style}]{shown(status)}[/{style}]" if style else shown(status)
    return text + (" (purged)" if purged_at else "")


# --- show -------------------------------------------------------------------------------------


@events_app.command("show")
@friendly_errors
def show_event(
    ref: str = typer.Argument(..., help="The event's id, or its delivery id / Stripe event id."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Everything about one event: headers, payload, attempts with errors, effects."""
    from domain.effects import effects_of_event
    from outbox import events as queries
    from outbox.cli.database import open_database
    from outbox.settings import get_settings

    settings = get_settings()
    with open_database(settings) as (_, sessions), sessions() as session:
        try:
            detail = queries.find_event(session, ref)
        except (queries.EventNotFound, queries.AmbiguousEvent) as exc:
            _refuse_unusable_id(ref)
            fail(str(exc))
        effects = effects_of_event(session, detail.summary.id)
    payload, payload_error = _decoded(detail)
    if as_json:
        print_json_lines([_detail_json(detail, payload, payload_error, effects)])
        return
    _print_detail(_stdout(), detail, payload, payload_error, effects)


def _decoded(detail: queries.EventDetail) -> tuple[dict[str, Any] | None, str | None]:
    from outbox.payload import UnreadablePayload, decode_body

    if detail.raw_body is None:
        when = detail.summary.purged_at
        return None, f"body purged{f' at {when:%Y-%m-%d %H:%M}' if when else ''}"
    try:
        return decode_body(detail.raw_body, detail.headers.get("content-type")), None
    except UnreadablePayload as exc:
        return None, str(exc)


def _detail_json(
    detail: queries.EventDetail,
    payload: dict[str, Any] | None,
    payload_error: str | None,
    effects: list[dict[str, Any]],
) -> dict[str, Any]:
    extra = {
        "verified_by": detail.verified_by,
        "installation_id": detail.installation_id,
        "stripe_account": detail.stripe_account,
        "provider_created_at": detail.provider_created_at,
        "hook_id": detail.hook_id,
        "api_version": detail.api_version,
        "lease_owner": detail.lease_owner,
        "lease_expires_at": detail.lease_expires_at,
    }
    return {
        **detail.summary.as_json(),
        **{k: v.isoformat() if isinstance(v, datetime) else v for k, v in extra.items()},
        "headers": detail.headers,
        "payload": payload,
        "payload_error": payload_error,
        "body_bytes": len(detail.raw_body) if detail.raw_body is not None else None,
        "failures": [f.as_json() for f in detail.failures],
        "effects": effects,
        "note": _no_effect_note(detail.summary.status, detail.summary.last_error),
    }


def _print_detail(
    console: SafeConsole,
    detail: queries.EventDetail,
    payload: dict[str, Any] | None,
    payload_error: str | None,
    effects: list[dict[str, Any]],
) -> None:
    s = detail.summary
    console.print(
        f"[bold]event {s.id}[/bold]  {shown(s.source)} {shown(s.event_type)}  "
        f"{_status_text(s.status, s.purged_at)}",
        highlight=False,
    )
    facts = SafeTable.grid(padding=(0, 2))
    facts.add_column(style="dim", no_wrap=True)
    facts.add_column(overflow="fold")
    for label, value in (
        ("delivery id", s.delivery_id),
        ("received", s.received_at),
        ("provider created", detail.provider_created_at),
        ("attempts", s.attempts),
        ("next attempt", s.next_attempt_at),
        ("processed", s.processed_at),
        (
            "lease",
            f"{detail.lease_owner} until {detail.lease_expires_at:%H:%M:%S}"
            if detail.lease_owner and detail.lease_expires_at
            else None,
        ),
        ("account", s.account_id),
        ("object", s.object_id),
        ("installation", detail.installation_id),
        ("stripe account", detail.stripe_account),
        ("livemode", s.livemode),
        ("api version", detail.api_version),
        ("hook id", detail.hook_id),
        ("verified by", detail.verified_by),
        ("backfilled", "yes (fetched by reconcile)" if s.backfilled else None),
        ("note" if _finished(s.status) else "last error", s.last_error),
        ("purged", s.purged_at),
    ):
        if value is not None and value != "":
            facts.add_row(
                label, f"{value:%Y-%m-%d %H:%M:%S}" if isinstance(value, datetime) else str(value)
            )
    console.print(facts, highlight=False)

    console.print("\n[bold]headers[/bold]")
    if detail.headers:
        for name, value in sorted(detail.headers.items()):
            console.print(f"  {name}: {value}", highlight=False, markup=False)
    else:
        console.print("  (none kept)")

    console.print("\n[bold]payload[/bold]")
    if payload is not None:
        console.print_json(json.dumps(payload, ensure_ascii=False), indent=2)
    else:
        console.print(f"  ({payload_error})", highlight=False, markup=False)
        if detail.raw_body is not None:
            console.print(detail.raw_body[:2000].decode("utf-8", "replace"), markup=False)

    console.print(f"\n[bold]failed attempts[/bold] ({len(detail.failures)})")
    if detail.failures:
        attempts = SafeTable(box=None, header_style="bold", pad_edge=False)
        for name in ("#", "failed at", "outcome", "worker"):
            attempts.add_column(name, no_wrap=True)
        attempts.add_column("error", overflow="fold")
        for f in detail.failures:
            attempts.add_row(
                str(f.attempt),
                f"{f.failed_at:%Y-%m-%d %H:%M:%S}",
                f.outcome,
                f.worker or "",
                f.error,
            )
        console.print(attempts, highlight=False)

    console.print(f"\n[bold]effects[/bold] ({len(effects)})")
    for effect in effects:
        console.print("  " + effect_line(effect), highlight=False, markup=False)
    if not effects:
        why = _no_effect_note(s.status, s.last_error)
        console.print(f"  (none: {why})" if why else "  (none recorded)", markup=False)


def _finished(status: str) -> bool:
    return status in (Status.DONE.value, Status.SKIPPED.value)


def _no_effect_note(status: str, last_error: str | None) -> str | None:
    """Why a finished event changed nothing: its handler's note, or why it was skipped."""
    return last_error if _finished(status) and last_error else None


def effect_line(effect: dict[str, Any]) -> str:
    """One effect row on one line: `kind: column=value, …` (None columns left out)."""
    rest = ", ".join(f"{k}={v}" for k, v in effect.items() if k != "kind" and v is not None)
    return f"{effect['kind']}: {rest}"


# --- replay -----------------------------------------------------------------------------------


@events_app.command("replay")
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
    from outbox import events as queries
    from outbox.cli.database import open_database
    from outbox.db import utcnow
    from outbox.events import EventFilter, ReplayVerdict
    from outbox.settings import get_settings
    from outbox.store import REPLAYABLE

    args = FilterArgs(status, source, event_type, account, since, until, delivery)
    if refs and args.given:
        usage_error("give event ids or filters, not both")
    if not refs and not args.given:
        usage_error("name the events to replay: ids, or filters such as --status dead --since 2d")
    in_play = [s.value for s in status or () if s in IN_LINE]
    if in_play:
        usage_error(
            f"--status {in_play[0]}: those rows are already waiting to be processed; "
            f"replay takes {', '.join(s.value for s in REPLAYABLE)}"
        )
    settings = get_settings()
    with open_database(settings) as (_, sessions):
        with sessions() as session:
            if refs:
                ids, unresolved = _resolve_refs(session, refs)
            else:
                where = args.resolve(session, utcnow())
                if not where.statuses:
                    where = EventFilter(**{**where.__dict__, "statuses": _replayable_names()})
                ids, unresolved = queries.matching_ids(session, where, limit=limit), []
            verdicts = queries.replay_verdicts(session, ids)
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
            "its status changed while replaying (someone else replayed or claimed it)",
        )
        for v in changed
    ]
    _report_replay(verdicts, put_back, refused, unresolved, ring_notes, as_json)
    _exit_if_refused(refused, unresolved)


def _replayable_names() -> tuple[str, ...]:
    from outbox.store import REPLAYABLE

    return tuple(s.value for s in REPLAYABLE)


def _resolve_refs(session: Session, refs: Sequence[str]) -> tuple[list[int], list[str]]:
    """Ids for each ref (id or delivery id), and a message for each that names nothing."""
    from outbox import events as queries

    ids: list[int] = []
    unresolved: list[str] = []
    for ref in refs:
        try:
            found = queries.find_event(session, ref).summary.id
        except (queries.EventNotFound, queries.AmbiguousEvent) as exc:
            _refuse_unusable_id(ref)
            unresolved.append(str(exc))
            continue
        if found not in ids:
            ids.append(found)
    return ids, unresolved


def _refuse_unusable_id(ref: str) -> None:
    """Digits that name no delivery and cannot be a row id are a mistyped id: exit 2."""
    if ref.strip().isdigit():
        id_argument(ref, "event id")


def _confirm(count: int) -> None:
    confirm_or_fail(f"Replay {count} events?", "replay cancelled: nothing replayed")


def _replay_paced(
    settings: Settings, sessions: sessionmaker[Session], ids: list[int], rate: float
) -> tuple[set[int], list[str]]:
    """Put `ids` back in batches at `rate` per second, ringing the processors after each.

    Returns the ids put back and what the rings said.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from outbox import store
    from outbox.cli.pacing import Pacer
    from outbox.cli.ringing import ProcessorsBell
    from outbox.db import transaction, utcnow

    pacer = Pacer(rate)
    put_back: set[int] = set()
    bell = ProcessorsBell(settings)
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
        for start in range(0, len(ids), pacer.batch_size):
            batch = ids[start : start + pacer.batch_size]
            with transaction(sessions) as session:
                done = store.replay(session, batch, now=utcnow())
            put_back.update(done)
            bell.ring(done)
            progress.advance(task, len(batch))
            if start + len(batch) < len(ids):
                pacer.finished(len(batch))
    note = bell.ring([]).note
    return put_back, [note] if note else []


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

    console = _stdout()
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
    console.print(listing_table(columns, rows, width=console.width), highlight=False)
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
    out = err_console if as_json else _stdout()
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


# --- retry ------------------------------------------------------------------------------------


@events_app.command("retry")
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
    from outbox import events as queries
    from outbox import store
    from outbox.cli.database import open_database
    from outbox.cli.ringing import ProcessorsBell
    from outbox.db import transaction, utcnow
    from outbox.events import EventFilter
    from outbox.settings import get_settings

    args = FilterArgs(None, source, event_type, account, since, until, delivery)
    if refs and args.given:
        usage_error("give event ids or filters, not both")
    if not refs and not args.given:
        usage_error("name the events to retry: ids, or filters such as --type 'invoice.*'")
    settings = get_settings()
    with open_database(settings) as (_, sessions):
        with sessions() as session:
            if refs:
                ids, unresolved = _resolve_refs(session, refs)
            else:
                where = args.resolve(session, utcnow())
                where = EventFilter(**{**where.__dict__, "statuses": (Status.PENDING.value,)})
                ids, unresolved = queries.matching_ids(session, where, limit=limit), []
            verdicts = queries.replay_verdicts(session, ids)
        if not verdicts and not unresolved:
            fail("no pending events match")
        todo = [v.id for v in verdicts if v.status == Status.PENDING.value]
        if not refs and len(todo) > 1 and not yes:
            confirm_or_fail(f"Retry {len(todo)} events now?", "retry cancelled: nothing changed")
        with transaction(sessions) as session:
            due = set(store.retry_now(session, todo, now=utcnow()))
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
    out = err_console if as_json else _stdout()
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


# --- stats ------------------------------------------------------------------------------------


@events_app.command("stats")
@friendly_errors
def stats(as_json: bool = JSON_OPTION) -> None:
    """Counts by source and status, the processing lag, and the dead of the last day."""
    from outbox import events as queries
    from outbox.cli.database import open_database
    from outbox.db import utcnow
    from outbox.settings import get_settings

    settings = get_settings()
    now = utcnow()
    with open_database(settings) as (_, sessions), sessions() as session:
        result = queries.event_stats(session, now=now)
    if as_json:
        print_json_lines([result.as_json()])
        return
    console = _stdout()
    statuses = [s.value for s in Status]
    sources = sorted({source for source, _ in result.counts} | {s.value for s in Source})
    rows = []
    for source in sources:
        counts = [result.counts.get((source, s), 0) for s in statuses]
        rows.append((source, *map(str, counts), str(sum(counts))))
    counted = [key_column(name, right=True) for name in [*statuses, "total"]]
    columns = (key_column("source"), *counted)
    console.print(listing_table(columns, rows, width=console.width), highlight=False)
    lag = _age(result.oldest_due_age) if result.oldest_due_age is not None else "nothing due"
    console.print(f"oldest due row waiting: {lag}", highlight=False)
    console.print(f"dead in the last day: {result.dead_last_day}", highlight=False)
    if result.expired_leases:
        console.print(
            f"[yellow]claimed rows whose lease ran out: {result.expired_leases}[/yellow]"
            " (the sweeper gives them back; is a worker stuck?)"
        )


def _age(age: timedelta) -> str:
    seconds = int(age.total_seconds())
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes}m"
    return f"{hours // 24}d {hours % 24}h"
