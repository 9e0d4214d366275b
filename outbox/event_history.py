"""The named reads of stored webhooks over time, for the operator console (outbox/console):
every statement here, each with its purpose, on a plain DBAPI connection (outbox/driver/dbapi.py).

events_per_minute -- rows received per minute by status since a moment (the overview's chart)
object_timeline   -- the rows of one object (source, object id), in the order they were created

What they return is plain values and outbox/query_results.py's EventSummary.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from outbox.driver.dbapi import Connection, utc
from outbox.queries import summaries_of
from outbox.query_results import EventSummary

#: Rows received since a moment, counted by minute and status; walks the received_at index.
#: A minute is `date_trunc` on Postgres and the text `YYYY-MM-DD HH:MM` on SQLite (where a
#: time is stored as `YYYY-MM-DD HH:MM:SS.ffffff` in UTC).
PER_MINUTE = {
    "postgresql": (
        "SELECT date_trunc('minute', received_at) AS minute, status, count(*) AS n"
        " FROM webhook_events WHERE received_at >= :since GROUP BY 1, 2"
    ),
    "sqlite": (
        "SELECT substr(received_at, 1, 16) AS minute, status, count(*) AS n"
        " FROM webhook_events WHERE received_at >= :since GROUP BY 1, 2"
    ),
}
#: The newest rows of one object, with when the provider created each; walks
#: ix_webhook_events_object.
OBJECT_ROWS = (
    "SELECT id, provider_created_at FROM webhook_events"
    " WHERE source = :source AND object_id = :object_id ORDER BY id DESC LIMIT :limit"
)


@dataclass(frozen=True)
class MinuteCount:
    """Rows received in one minute (UTC) that are now in one status."""

    minute: datetime
    status: str
    count: int


@dataclass(frozen=True)
class TimelineEntry:
    """One row of an object's timeline: when it was created (the provider's time, else
    when it was received) and the row as a listing shows it."""

    created_at: datetime
    event: EventSummary


def events_per_minute(db: Connection, *, since: datetime) -> list[MinuteCount]:
    """Rows received at or after `since`, counted per minute and by their status now."""
    rows = db.rows(PER_MINUTE[db.dialect], since=since)
    return sorted(
        (MinuteCount(_minute(row["minute"]), row["status"], int(row["n"])) for row in rows),
        key=lambda c: (c.minute, c.status),
    )


def object_timeline(
    db: Connection, source: str, object_id: str, *, limit: int = 100
) -> list[TimelineEntry]:
    """The newest `limit` rows of one object, oldest created first (ties by id)."""
    found = db.rows(OBJECT_ROWS, source=source, object_id=object_id, limit=limit)
    created = {row["id"]: utc(row["provider_created_at"]) for row in found}
    entries = [
        TimelineEntry(created[s.id] or s.received_at, s) for s in summaries_of(db, list(created))
    ]
    return sorted(entries, key=lambda e: (e.created_at, e.event.id))


def _minute(value: datetime | str) -> datetime:
    if isinstance(value, str):
        return datetime.strptime(value, "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
    moment = utc(value)
    assert moment is not None
    return moment
