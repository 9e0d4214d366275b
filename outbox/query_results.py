"""What the operators' reads (outbox/queries.py) return: plain values, no database code."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

#: How far back "dead rows in the last day" looks.
RECENT_DEAD_WINDOW = timedelta(days=1)


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


@dataclass(frozen=True)
class EventSummary:
    """One row as a listing shows it (no body). Times are aware, in UTC."""

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


@dataclass(frozen=True)
class EventPage:
    """A page of a listing, and whether every row that could belong on it was looked at.

    complete=False: the listing stopped walking older partitions after its time budget
    (queries.list_page); rows received before `searched_since` were not searched.
    """

    rows: list[EventSummary]
    complete: bool = True
    searched_since: datetime | None = None


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


@dataclass(frozen=True)
class PartitionPreview:
    """A partition a purge would remove whole (Postgres): its range, its rows as the
    statistics estimate them (None: never analysed), and its unfinished rows, counted
    exactly, which the purge keeps by moving them into the default partition."""

    name: str
    lower: datetime | None
    upper: datetime
    estimated_rows: int | None
    unfinished: dict[str, int]

    @property
    def kept(self) -> int:
        return sum(self.unfinished.values())


@dataclass(frozen=True)
class PurgePreview:
    """What purge would do for a cut-off: rows it removes (bodies on SQLite and on an
    unpartitioned Postgres; whole rows by partition on a partitioned one), and the older
    unfinished rows it keeps."""

    purgeable: int
    unfinished_older: int
    #: A partitioned Postgres: the purge removes these partitions whole, and `purgeable`
    #: is an estimate (the statistics' row counts), not a count.
    by_partitions: bool = False
    partitions: tuple[PartitionPreview, ...] = ()
    #: Detached partitions a purge that stopped before dropping them left: the next drops them.
    leftovers: tuple[str, ...] = ()
    #: Finished rows of the default partition older than the cut-off, counted exactly:
    #: deleted in bounded batches.
    default_rows: int = 0


@dataclass(frozen=True)
class EventStats:
    """The health of the outbox at a glance."""

    #: (source, status) -> rows, exact: the statuses in play always (pending, processing,
    #: dead), the finished ones (done, skipped) when `finished_estimate` is None.
    counts: dict[tuple[str, str], int]
    #: How long the oldest due row has waited (None: nothing is due): the processors' lag.
    oldest_due_age: timedelta | None
    #: Rows that became dead in the last RECENT_DEAD_WINDOW.
    dead_last_day: int
    #: Rows claimed by a worker whose lease ran out (the sweeper gives them back).
    expired_leases: int
    #: Finished rows (done or skipped, every source) as the table's statistics estimate
    #: them, when they were not counted (a large table); None: counted in `counts`.
    finished_estimate: int | None = None
    #: Time partitions of the table (0: one table).
    partitions: int = 0

    @property
    def exact(self) -> bool:
        """Whether every figure is a count (no estimate)."""
        return self.finished_estimate is None

    @property
    def total(self) -> int:
        return sum(self.counts.values()) + (self.finished_estimate or 0)

    def as_json(self) -> dict[str, Any]:
        by_source: dict[str, dict[str, int]] = {}
        for (source, status), count in sorted(self.counts.items()):
            by_source.setdefault(source, {})[status] = count
        return {
            "counts": by_source,
            "finished_estimate": self.finished_estimate,
            "total": self.total,
            "total_exact": self.exact,
            "partitions": self.partitions,
            "oldest_due_age_seconds": (
                round(self.oldest_due_age.total_seconds(), 3)
                if self.oldest_due_age is not None
                else None
            ),
            "dead_last_day": self.dead_last_day,
            "expired_leases": self.expired_leases,
        }
