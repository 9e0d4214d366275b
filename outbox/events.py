"""The named read queries operators ask of `webhook_events`: find, show, count.

list_events      -- rows matching a filter, newest first, one page at a time
matching_ids     -- every id matching a filter (what a bulk replay would take)
find_event       -- one row by id or delivery id, with its failed attempts
replay_verdicts  -- for each id asked, whether replay may take it, and why not
purge_preview    -- what `purge` would remove, and the unfinished rows it leaves alone
known_deliveries -- which of some provider ids are stored already (reconcile)
event_stats      -- counts by source and status, the lag, the recent dead
events_after     -- matching rows past an id, oldest first (`events tail`)
newest_id        -- the highest id stored
settled_id       -- the highest id of a row received before a moment
summaries_of     -- some rows by id, as a listing shows them

The CLI calls these and store.py's writes; it never builds a query itself.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from outbox.fields import as_int64
from outbox.models import FINISHED, IN_LINE, EventFailure, Status, WebhookEvent

#: How far back "dead rows in the last day" looks.
RECENT_DEAD_WINDOW = timedelta(days=1)


@dataclass(frozen=True)
class EventFilter:
    """What an operator is looking for; every field left empty matches everything."""

    statuses: Collection[str] = ()
    sources: Collection[str] = ()
    #: An event type, `*` matching any run of characters ("invoice.*", "*.deleted").
    event_type: str | None = None
    account_id: int | None = None
    #: Received at or after / strictly before.
    since: datetime | None = None
    until: datetime | None = None
    delivery_id: str | None = None

    def apply(self, query: Select[Any]) -> Select[Any]:
        e = WebhookEvent
        if self.statuses:
            query = query.where(e.status.in_(list(self.statuses)))
        if self.sources:
            query = query.where(e.source.in_(list(self.sources)))
        if self.event_type:
            query = query.where(e.event_type.like(like_pattern(self.event_type), escape="\\"))
        if self.account_id is not None:
            query = query.where(e.account_id == self.account_id)
        if self.since is not None:
            query = query.where(e.received_at >= self.since)
        if self.until is not None:
            query = query.where(e.received_at < self.until)
        if self.delivery_id:
            query = query.where(e.delivery_id == self.delivery_id)
        return query


def like_pattern(wildcard: str) -> str:
    """`*` becomes SQL's `%`; SQL's own `%` and `_` are matched literally."""
    escaped = wildcard.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%")


@dataclass(frozen=True)
class EventSummary:
    """One row as a listing shows it (no body)."""

    id: int
    source: str
    delivery_id: str
    event_type: str
    status: str
    attempts: int
    received_at: datetime
    next_attempt_at: datetime | None
    processed_at: datetime | None
    account_id: int | None
    object_id: str | None
    livemode: bool | None
    backfilled: bool
    last_error: str | None
    purged_at: datetime | None

    def as_json(self) -> dict[str, Any]:
        return {k: _jsonable(v) for k, v in self.__dict__.items()}


_SUMMARY_COLUMNS = [getattr(WebhookEvent, name) for name in EventSummary.__dataclass_fields__]


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def list_events(
    session: Session,
    where: EventFilter,
    *,
    limit: int,
    before_id: int | None = None,
    offset: int = 0,
) -> list[EventSummary]:
    """One page of matching rows, newest first (highest id first).

    Page with `before_id` (the last id of the previous page: stable while rows arrive)
    or with `offset`.
    """
    query = where.apply(select(*_SUMMARY_COLUMNS))
    if before_id is not None:
        query = query.where(WebhookEvent.id < before_id)
    query = query.order_by(WebhookEvent.id.desc()).limit(limit).offset(offset)
    return [EventSummary(**row._mapping) for row in session.execute(query)]


def events_after(
    session: Session, where: EventFilter, *, after_id: int, up_to_id: int, limit: int
) -> list[EventSummary]:
    """Matching rows with after_id < id <= up_to_id, oldest first: a range of the primary
    key, so its cost is that of the rows in the range, never of the table."""
    query = where.apply(select(*_SUMMARY_COLUMNS)).where(
        WebhookEvent.id > after_id, WebhookEvent.id <= up_to_id
    )
    query = query.order_by(WebhookEvent.id).limit(limit)
    return [EventSummary(**row._mapping) for row in session.execute(query)]


def newest_id(session: Session) -> int:
    """The highest id stored (0 for an empty table): one step down the primary key."""
    return session.scalar(select(func.max(WebhookEvent.id))) or 0


def settled_id(session: Session, before: datetime) -> int:
    """The highest id of a row received before `before` (0: none): rows below it that are
    not visible yet never will be. Walks the primary key down from the top, past the rows
    received since (a few seconds' worth), never the table."""
    query = (
        select(WebhookEvent.id)
        .where(WebhookEvent.received_at < before)
        .order_by(WebhookEvent.id.desc())
        .limit(1)
    )
    return session.scalar(query) or 0


def summaries_of(session: Session, ids: Collection[int]) -> list[EventSummary]:
    """These rows as a listing shows them, by id (primary-key lookups); missing ids left out."""
    found: list[EventSummary] = []
    for chunk in _chunks(sorted(ids)):
        query = select(*_SUMMARY_COLUMNS).where(WebhookEvent.id.in_(chunk))
        found.extend(EventSummary(**row._mapping) for row in session.execute(query))
    return found


def matching_ids(session: Session, where: EventFilter, *, limit: int | None = None) -> list[int]:
    """Ids of every row matching `where`, oldest first (the order a replay puts them back)."""
    query = where.apply(select(WebhookEvent.id)).order_by(WebhookEvent.id)
    if limit is not None:
        query = query.limit(limit)
    return list(session.scalars(query))


@dataclass(frozen=True)
class Attempt:
    """One failed attempt, from webhook_event_failures."""

    attempt: int
    failed_at: datetime
    outcome: str
    error: str
    worker: str | None

    def as_json(self) -> dict[str, Any]:
        return {k: _jsonable(v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class EventDetail:
    """Everything stored about one row: its summary, what arrived, and its failures."""

    summary: EventSummary
    raw_body: bytes | None
    headers: dict[str, Any]
    verified_by: str | None
    installation_id: int | None
    stripe_account: str | None
    provider_created_at: datetime | None
    hook_id: str | None
    api_version: str | None
    lease_owner: str | None
    lease_expires_at: datetime | None
    failures: list[Attempt] = field(default_factory=list)


class EventNotFound(LookupError):
    """No row has that id or delivery id."""


class AmbiguousEvent(LookupError):
    """A delivery id stored by more than one source; the ids say which rows."""

    def __init__(self, ref: str, ids: Sequence[int]) -> None:
        super().__init__(f"{ref!r} is the delivery id of several events: {list(ids)}")
        self.ids = list(ids)


def find_event(session: Session, ref: str) -> EventDetail:
    """The row whose id is `ref`, or else whose delivery id is; raises EventNotFound."""
    row = _by_ref(session, ref.strip())
    failures = session.scalars(
        select(EventFailure).where(EventFailure.event_id == row.id).order_by(EventFailure.id)
    )
    summary = EventSummary(
        **{name: getattr(row, name) for name in EventSummary.__dataclass_fields__}
    )
    return EventDetail(
        summary=summary,
        raw_body=row.raw_body,
        headers=dict(row.headers or {}),
        verified_by=row.verified_by,
        installation_id=row.installation_id,
        stripe_account=row.stripe_account,
        provider_created_at=row.provider_created_at,
        hook_id=row.hook_id,
        api_version=row.api_version,
        lease_owner=row.lease_owner,
        lease_expires_at=row.lease_expires_at,
        failures=[Attempt(f.attempt, f.failed_at, f.outcome, f.error, f.worker) for f in failures],
    )


def _by_ref(session: Session, ref: str) -> WebhookEvent:
    row_id = as_int64(ref)  # ASCII digits within 64 bits: anything else is a delivery id
    if row_id is not None:
        row = session.get(WebhookEvent, row_id)
        if row is not None:
            return row
    rows = list(session.scalars(select(WebhookEvent).where(WebhookEvent.delivery_id == ref)))
    if len(rows) > 1:
        raise AmbiguousEvent(ref, sorted(r.id for r in rows))
    if not rows:
        raise EventNotFound(f"no event has id or delivery id {ref!r}")
    return rows[0]


@dataclass(frozen=True)
class ReplayVerdict:
    """Whether replay may put one row back, and if not, why (for the operator)."""

    id: int
    delivery_id: str | None
    event_type: str | None
    status: str | None
    refusal: str | None

    @property
    def replayable(self) -> bool:
        return self.refusal is None


def replay_verdicts(session: Session, ids: Sequence[int]) -> list[ReplayVerdict]:
    """For each id, in the order given: replayable, or the reason store.replay would leave it.

    Mirrors the guard of store.replay (finished or dead, body still there), so the plan an
    operator reads is the one the store will follow.
    """
    rows: dict[int, Any] = {}
    for chunk in _chunks(list(ids)):
        rows.update(
            (r.id, r)
            for r in session.execute(
                select(
                    WebhookEvent.id,
                    WebhookEvent.delivery_id,
                    WebhookEvent.event_type,
                    WebhookEvent.status,
                    WebhookEvent.purged_at,
                    WebhookEvent.raw_body.is_(None).label("body_gone"),
                ).where(WebhookEvent.id.in_(chunk))
            )
        )
    # The store's rule, imported here: the store loads psycopg, which listing does not need.
    from outbox.store import REPLAYABLE

    verdicts = []
    replayable = {s.value for s in REPLAYABLE}
    for event_id in ids:
        row = rows.get(event_id)
        if row is None:
            verdicts.append(ReplayVerdict(event_id, None, None, None, "no such event"))
            continue
        refusal = None
        if row.status in {s.value for s in IN_LINE}:
            refusal = f"still {row.status}: it is already waiting to be processed" + (
                " (`outbox events retry` makes it due now)" if row.status == "pending" else ""
            )
        elif row.status not in replayable:
            refusal = f"status {row.status} cannot be replayed"
        elif row.body_gone:
            when = row.purged_at.date().isoformat() if row.purged_at else "earlier"
            refusal = f"purged ({when}): its body is gone, so there is nothing to process"
        verdicts.append(ReplayVerdict(row.id, row.delivery_id, row.event_type, row.status, refusal))
    return verdicts


@dataclass(frozen=True)
class PurgePreview:
    """What purge would do for a cut-off: bodies it removes, rows too young or unfinished."""

    purgeable: int
    unfinished_older: int


def purge_preview(session: Session, *, older_than: datetime) -> PurgePreview:
    """Counts with the same guard as store.purge: finished, received before, body present."""
    old = select(func.count()).where(WebhookEvent.received_at < older_than)
    purgeable = session.scalar(
        old.where(
            WebhookEvent.status.in_([s.value for s in FINISHED]),
            WebhookEvent.raw_body.is_not(None),
        )
    )
    unfinished = session.scalar(old.where(WebhookEvent.status.not_in([s.value for s in FINISHED])))
    return PurgePreview(purgeable or 0, unfinished or 0)


def known_deliveries(session: Session, source: str, delivery_ids: Collection[str]) -> set[str]:
    """Which of these provider ids (Stripe event ids, GitHub delivery guids) are stored."""
    known: set[str] = set()
    for chunk in _chunks(list(dict.fromkeys(delivery_ids))):
        known.update(
            session.scalars(
                select(WebhookEvent.delivery_id).where(
                    WebhookEvent.source == source, WebhookEvent.delivery_id.in_(chunk)
                )
            )
        )
    return known


#: Values in one IN list at most: far below what Postgres (65535 parameters) and SQLite take.
_IN_CHUNK = 1000


def _chunks(values: list[Any]) -> Iterator[list[Any]]:
    for start in range(0, len(values), _IN_CHUNK):
        yield values[start : start + _IN_CHUNK]


@dataclass(frozen=True)
class EventStats:
    """The health of the outbox at a glance."""

    #: (source, status) -> rows
    counts: dict[tuple[str, str], int]
    #: How long the oldest due row has waited (None: nothing is due): the processors' lag.
    oldest_due_age: timedelta | None
    #: Rows that became dead in the last RECENT_DEAD_WINDOW.
    dead_last_day: int
    #: Rows claimed by a worker whose lease ran out (the sweeper gives them back).
    expired_leases: int

    def as_json(self) -> dict[str, Any]:
        by_source: dict[str, dict[str, int]] = {}
        for (source, status), count in sorted(self.counts.items()):
            by_source.setdefault(source, {})[status] = count
        return {
            "counts": by_source,
            "total": sum(self.counts.values()),
            "oldest_due_age_seconds": (
                round(self.oldest_due_age.total_seconds(), 3)
                if self.oldest_due_age is not None
                else None
            ),
            "dead_last_day": self.dead_last_day,
            "expired_leases": self.expired_leases,
        }


def event_stats(session: Session, *, now: datetime) -> EventStats:
    counts = {
        (r.source, r.status): r.n
        for r in session.execute(
            select(WebhookEvent.source, WebhookEvent.status, func.count().label("n")).group_by(
                WebhookEvent.source, WebhookEvent.status
            )
        )
    }
    oldest_due = session.scalar(
        select(func.min(WebhookEvent.next_attempt_at)).where(
            WebhookEvent.status == Status.PENDING.value, WebhookEvent.next_attempt_at <= now
        )
    )
    dead_recent = session.scalar(
        select(func.count()).where(
            WebhookEvent.status == Status.DEAD.value,
            WebhookEvent.processed_at >= now - RECENT_DEAD_WINDOW,
        )
    )
    expired = session.scalar(
        select(func.count()).where(
            WebhookEvent.status == Status.PROCESSING.value, WebhookEvent.lease_expires_at <= now
        )
    )
    return EventStats(
        counts=counts,
        oldest_due_age=(now - oldest_due) if oldest_due is not None else None,
        dead_last_day=dead_recent or 0,
        expired_leases=expired or 0,
    )
