"""The writes an operator's command makes to `webhook_events`, each one guarded.

replay    -- put finished or dead rows back to be processed, with fresh attempts
retry_now -- make waiting rows due now, keeping their attempts
purge     -- drop old bodies of finished rows, keeping a tombstone

The SQL is SQLAlchemy Core, run as outbox/driver/statements.py's `Query`; the plans the CLI
shows before writing are the reads of outbox/queries.py, with the same guards. Callers
pass the session and the time; nothing here commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, and_, bindparam, literal_column, select, update
from sqlalchemy.orm import Session

from outbox.driver.statements import Query
from outbox.models import Status, WebhookEvent
from outbox.states import REPLAYABLE

events: Table = WebhookEvent.__table__  # type: ignore[assignment]


def replay(session: Session, ids: Sequence[int], *, now: datetime) -> list[int]:
    """Put finished or dead rows back to pending, due now, with fresh attempts.

    Rows still pending or processing are left alone (they are already in play), and so
    are purged rows, whose bodies are gone. Returns the ids that were put back.
    """
    if not ids:
        return []
    return sorted(id_ for (id_,) in _REPLAY.rows(session, ids=list(ids), now=now))


def retry_now(session: Session, ids: Sequence[int], *, now: datetime) -> list[int]:
    """Make pending rows (new, or waiting for their next attempt) due now.

    Their attempts are kept: a retry brought forward is still an attempt of the same
    series. Rows in any other status are left alone. Returns the ids made due.
    """
    if not ids:
        return []
    return sorted(id_ for (id_,) in _RETRY_NOW.rows(session, ids=list(ids), now=now))


def purge(
    session: Session, *, older_than: datetime, now: datetime, limit: int | None = None
) -> int:
    """Drop the bodies of done and skipped rows received before `older_than`.

    The row stays as a tombstone (source, delivery id, type, times), so a very late
    duplicate delivery is still recognised and not applied again. With `limit`, at most
    that many rows, oldest ids first: a bounded transaction, repeated until it returns 0.
    """
    if limit is None:
        return _PURGE.count(session, older_than=older_than, now=now)
    return _PURGE_OLDEST.count(session, older_than=older_than, now=now, limit=limit)


#: Put the given finished or dead rows that still have their body back to pending, due
#: now. Parameters: ids, now.
_REPLAY = Query(
    lambda one_of: (
        update(events)
        .where(
            one_of(events.c.id, "ids"),
            events.c.status.in_([s.value for s in REPLAYABLE]),
            events.c.raw_body.is_not(None),
        )
        .values(
            status=Status.PENDING.value,
            next_attempt_at=bindparam("now"),
            attempts=0,
            interruptions=0,
            last_error=None,
            processed_at=None,
        )
        .returning(events.c.id)
    )
)
#: Make the given pending rows due now. Parameters: ids, now.
_RETRY_NOW = Query(
    lambda one_of: (
        update(events)
        .where(one_of(events.c.id, "ids"), events.c.status == Status.PENDING.value)
        .values(next_attempt_at=bindparam("now"))
        .returning(events.c.id)
    )
)
_purgeable = and_(
    events.c.status.in_([Status.DONE.value, Status.SKIPPED.value]),
    events.c.received_at < bindparam("older_than"),
    events.c.raw_body.is_not(None),
)
# The empty JSON object written as text: SQLAlchemy has no literal form of a JSON value.
_tombstone: dict[str, Any] = {
    "raw_body": None,
    "headers": literal_column("'{}'", events.c.headers.type),
    "purged_at": bindparam("now"),
}
#: Drop the body of every done or skipped row received before `older_than`. Parameters:
#: older_than, now.
_PURGE = Query(update(events).where(_purgeable).values(_tombstone))
#: The same for the `limit` oldest ids of them. Parameters: older_than, now, limit.
_PURGE_OLDEST = Query(
    update(events)
    .where(
        events.c.id.in_(
            select(events.c.id).where(_purgeable).order_by(events.c.id).limit(bindparam("limit"))
        )
    )
    .values(_tombstone)
)
