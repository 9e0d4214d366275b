"""What each console page shows, read through the named operations the CLI uses:
outbox/queries.py and outbox/event_history.py for the events, the domain's own reads
(balances, subscriptions, jobs, usage, effects) for the rest. Nothing here is SQL; every
function takes the request's session and returns plain values for its template.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from outbox import event_history, queries
from outbox.console.chart import Chart, per_minute_chart
from outbox.console.forms import FilterForm, row_id
from outbox.driver.dbapi import of_session
from outbox.query_results import (
    RECENT_DEAD_WINDOW,
    AmbiguousEvent,
    EventDetail,
    EventNotFound,
    EventStats,
    EventSummary,
)
from outbox.states import Source, Status

if TYPE_CHECKING:
    from sqlalchemy.orm import Session
    from starlette.datastructures import QueryParams

#: Rows on one page of the events listing.
PAGE_SIZE = 50
#: Hours of the overview's chart.
CHART_HOURS = 3
#: Dead rows of the last day listed on the overview.
RECENT_DEAD_SHOWN = 10
#: Ledger entries, jobs and usage records shown on an account's page.
ACCOUNT_ROWS = 50
#: Jobs and usage records listed as needing attention.
ATTENTION_ROWS = 100


#: What the account page shows of a ledger entry.
LEDGER_FIELDS = ("id", "created_at", "amount", "debt_change", "reason", "key", "event_id", "job_id")


class NotFound(LookupError):
    """What a page names is not there; the message says what, for the operator."""


@dataclass(frozen=True)
class Overview:
    stats: EventStats
    statuses: list[str]
    sources: list[str]
    recent_dead: list[EventSummary]
    chart: Chart


def overview(session: Session, *, now: datetime) -> Overview:
    """Counts by status and source, the due backlog's age, the recent dead, the chart."""
    db = of_session(session)
    stats = queries.event_stats(db, now=now)
    dead = queries.EventFilter(statuses=("dead",), since=now - RECENT_DEAD_WINDOW)
    recent_dead = queries.list_events(db, dead, limit=RECENT_DEAD_SHOWN)
    since = now - timedelta(hours=CHART_HOURS)
    counts = event_history.events_per_minute(db, since=since)
    return Overview(
        stats,
        [s.value for s in Status],
        sorted({source for source, _ in stats.counts} | {s.value for s in Source}),
        recent_dead,
        per_minute_chart(counts, now=now, hours=CHART_HOURS),
    )


@dataclass(frozen=True)
class EventsPage:
    form: FilterForm
    rows: list[EventSummary]
    #: The id the next (older) page starts below, None on the last page.
    older_than: int | None
    before_id: int | None
    #: False when the listing stopped reading older partitions after its time budget
    #: (queries.list_page): rows received before `searched_since` were not searched.
    complete: bool = True
    searched_since: datetime | None = None

    @property
    def further_back(self) -> str | None:
        """The `until` that continues a search stopped by its budget, as the CLI says it."""
        if self.complete or self.searched_since is None:
            return None
        return f"{self.searched_since:%Y-%m-%dT%H:%M:%S}"


def events_page(session: Session, params: QueryParams, *, now: datetime) -> EventsPage:
    """One page of `outbox events list`: the newest rows matching the URL's filters, below
    its `before_id` (the last id of the page before)."""
    form = FilterForm.from_query(params)
    before_id = row_id(params.get("before_id"), "before_id")
    db = of_session(session)
    where = form.resolve(db, now)
    found = queries.list_page(db, where, limit=PAGE_SIZE + 1, before_id=before_id)
    rows = found.rows
    older = rows[PAGE_SIZE - 1].id if len(rows) > PAGE_SIZE else None
    return EventsPage(
        form, rows[:PAGE_SIZE], older, before_id, found.complete, found.searched_since
    )


@dataclass(frozen=True)
class EventPage:
    detail: EventDetail
    payload_text: str | None
    payload_error: str | None
    effects: list[dict[str, Any]]
    timeline: list[event_history.TimelineEntry]
    note: str | None


def event_page(session: Session, ref: str) -> EventPage:
    """`outbox events show`, and the other events of the same object in created order."""
    from domain.effects import effects_of_event
    from outbox.cli.event_display import no_effect_note

    db = of_session(session)
    try:
        detail = queries.find_event(db, ref)
    except (EventNotFound, AmbiguousEvent) as exc:
        raise NotFound(str(exc)) from None
    payload, payload_error = _decoded(detail)
    s = detail.summary
    timeline = (
        event_history.object_timeline(db, s.source, s.object_id) if s.object_id is not None else []
    )
    return EventPage(
        detail,
        json.dumps(payload, indent=2, ensure_ascii=False) if payload is not None else None,
        payload_error,
        effects_of_event(session, s.id),
        timeline,
        no_effect_note(s.status, s.last_error),
    )


@dataclass(frozen=True)
class AccountPage:
    account: dict[str, Any]
    balance: Any
    held: Any
    available: Any
    debt: Any
    paid_features: bool
    ledger: list[Any]
    subscriptions: list[dict[str, Any]]
    jobs: list[dict[str, Any]]
    usage: list[dict[str, Any]]


def account_page(session: Session, ref: str, *, now: datetime, grace: timedelta) -> AccountPage:
    """`outbox accounts show` and `credits show | history`, with the account's jobs and usage."""
    from domain import balances, jobs, usage
    from domain.accounts import find_account
    from domain.subscriptions import subscriptions_of

    account = find_account(session, ref)
    if account is None:
        raise NotFound(f"no account with id or login {ref!r}")
    standing = balances.standing(session, account.id)
    subs = [sub.as_dict(now, grace) for sub in subscriptions_of(session, account.id)]
    return AccountPage(
        {
            "id": account.id,
            "login": account.login,
            "kind": account.kind,
            "stripe_customer_id": account.stripe_customer_id,
            "created_at": account.created_at,
        },
        standing.balance,
        standing.held,
        standing.available,
        standing.debt,
        any(sub["paid_features"] for sub in subs),
        [
            {c: getattr(e, c) for c in LEDGER_FIELDS}
            for e in reversed(balances.history(session, account.id, limit=ACCOUNT_ROWS))
        ],
        subs,
        [
            jobs.describe(j)
            for j in jobs.list_jobs(session, account_id=account.id, limit=ACCOUNT_ROWS)
        ],
        usage.list_usage(session, account_id=account.id, limit=ACCOUNT_ROWS),
    )


@dataclass(frozen=True)
class AttentionPage:
    failed_jobs: list[dict[str, Any]]
    unreported_usage: list[dict[str, Any]]


def attention_page(session: Session) -> AttentionPage:
    """Failed jobs (`outbox jobs list --status failed`) and usage records Stripe lacks
    (`outbox usage list --unreported`), the ones needing an operator first."""
    from domain import jobs, usage

    failed = jobs.list_jobs(session, status=jobs.JobStatus.FAILED, limit=ATTENTION_ROWS)
    unreported = usage.list_usage(session, unreported=True, limit=ATTENTION_ROWS)
    unreported.sort(key=lambda row: row["state"] != "needs operator")
    return AttentionPage([jobs.describe(j) for j in failed], unreported)


def _decoded(detail: EventDetail) -> tuple[Any, str | None]:
    """The payload, or why there is none to show (purged, unreadable), as `events show`."""
    from outbox.payload import payload_to_show

    content_type = detail.headers.get("content-type")
    return payload_to_show(detail.raw_body, content_type, detail.summary.purged_at)
