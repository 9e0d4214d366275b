"""How stored events look on a terminal: the listing table, one event in full, the stats.

Every stored string is untrusted (it came in a webhook): cells are text, never markup
(outbox/cli/tables.py), and lines go through `shown` or markup=False (outbox/cli/common.py).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from outbox.cli.common import SafeConsole, SafeTable, shown
from outbox.cli.tables import key_column, note_column, print_listing, text_column
from outbox.states import FINISHED, Source, Status

if TYPE_CHECKING:
    from outbox.query_results import EventDetail, EventStats, EventSummary

#: Terminals narrower than this get the received time without the year and seconds.
FULL_TIME_WIDTH = 120

EVENT_COLUMNS = (
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


def print_events(console: SafeConsole, rows: Sequence[EventSummary]) -> None:
    """One event a line; at 80 columns the id, status, tries and account stay whole, and
    the error, then the delivery id and the type, are cut (tables.py)."""
    from rich.text import Text

    moment = "%Y-%m-%d %H:%M:%S" if console.width >= FULL_TIME_WIDTH else "%m-%d %H:%M"
    print_listing(
        EVENT_COLUMNS,
        [
            (
                str(r.id),
                f"{r.received_at:{moment}}",
                r.source + (" (backfilled)" if r.backfilled else ""),
                r.event_type,
                Text.from_markup(status_text(r.status, r.purged_at)),
                str(r.attempts),
                r.delivery_id,
                str(r.account_id) if r.account_id is not None else "",
                (r.last_error or "").splitlines()[0] if r.last_error else "",
            )
            for r in rows
        ],
        console,
    )


_STATUS_STYLE = {"dead": "red", "pending": "yellow", "processing": "cyan", "done": "green"}


def status_text(status: str, purged_at: datetime | None) -> str:
    """The status as markup."""
    style = _STATUS_STYLE.get(status, "")
    text = f"[{style}]{shown(status)}[/{style}]" if style else shown(status)
    return text + (" (purged)" if purged_at else "")


def finished(status: str) -> bool:
    return status in FINISHED


def no_effect_note(status: str, last_error: str | None) -> str | None:
    """Why a finished event changed nothing: its handler's note, or why it was skipped."""
    return last_error if finished(status) and last_error else None


def effect_line(effect: dict[str, Any]) -> str:
    """One effect row on one line: `kind: column=value, …` (None columns left out)."""
    rest = ", ".join(f"{k}={v}" for k, v in effect.items() if k != "kind" and v is not None)
    return f"{effect['kind']}: {rest}"


def detail_json(
    detail: EventDetail,
    payload: dict[str, Any] | None,
    payload_error: str | None,
    effects: list[dict[str, Any]],
) -> dict[str, Any]:
    """`events show --json`: the summary's fields, what arrived, failures and effects."""
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
        "note": no_effect_note(detail.summary.status, detail.summary.last_error),
    }


def print_detail(
    console: SafeConsole,
    detail: EventDetail,
    payload: dict[str, Any] | None,
    payload_error: str | None,
    effects: list[dict[str, Any]],
) -> None:
    """`events show`: the facts, headers, payload, failed attempts and effects."""
    s = detail.summary
    console.print(
        f"[bold]event {s.id}[/bold]  {shown(s.source)} {shown(s.event_type)}  "
        f"{status_text(s.status, s.purged_at)}",
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
        ("note" if finished(s.status) else "last error", s.last_error),
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
        why = no_effect_note(s.status, s.last_error)
        console.print(f"  (none: {why})" if why else "  (none recorded)", markup=False)


def print_stats(console: SafeConsole, result: EventStats) -> None:
    """`events stats`: a row per source, a column per status, then the lag and the dead.

    A large table's finished rows are not counted but estimated (queries.event_stats): then
    the table has the statuses in play only, and a line says which figures are estimates."""
    statuses = [s.value for s in Status]
    if not result.exact:
        statuses = [s for s in statuses if s not in {f.value for f in FINISHED}]
    sources = sorted({source for source, _ in result.counts} | {s.value for s in Source})
    rows = []
    for source in sources:
        counts = [result.counts.get((source, s), 0) for s in statuses]
        rows.append((source, *map(str, counts), str(sum(counts))))
    counted = [key_column(name, right=True) for name in [*statuses, "total"]]
    columns = (key_column("source"), *counted)
    print_listing(columns, rows, console)
    if result.finished_estimate is not None:
        console.print(
            f"done or skipped: about {result.finished_estimate:,} (an estimate from the table's"
            f" statistics{partitions_note(result.partitions)}); the counts above are exact",
            highlight=False,
        )
    lag = age(result.oldest_due_age) if result.oldest_due_age is not None else "nothing due"
    console.print(f"oldest due row waiting: {lag}", highlight=False)
    console.print(f"dead in the last day: {result.dead_last_day}", highlight=False)
    if result.expired_leases:
        console.print(
            f"[yellow]claimed rows whose lease ran out: {result.expired_leases}[/yellow]"
            " (the sweeper gives them back; is a worker stuck?)"
        )


def partitions_note(partitions: int) -> str:
    return f", {partitions} partitions" if partitions else ""


def age(elapsed: timedelta) -> str:
    """A duration as a person reads it: 42s, 3m 5s, 2h 10m, 3d 4h."""
    seconds = int(elapsed.total_seconds())
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes}m"
    return f"{hours // 24}d {hours % 24}h"
