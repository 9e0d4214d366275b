"""What the sweeper does to `webhook_events`: give back rows whose worker vanished, and find
the rows to ring again.

release_expired -- rows whose lease ran out, back to pending (or dead), with a reason
due_ids         -- pending rows whose time has come, oldest first

The SQL is SQLAlchemy Core, run as outbox/driver/statements.py's `Query`. Callers pass the
session and the time; nothing here commits.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, Text, and_, bindparam, case, cast, func, insert, literal, select
from sqlalchemy import update as update_of
from sqlalchemy.orm import Session

from outbox.driver.statements import Query, on_postgres
from outbox.models import EventFailure, Status, WebhookEvent
from outbox.retry import RetryPolicy

events: Table = WebhookEvent.__table__  # type: ignore[assignment]
_failures: Table = EventFailure.__table__  # type: ignore[assignment]


def release_expired(
    session: Session, *, now: datetime, policy: RetryPolicy, limit: int = 500
) -> int:
    """Give back rows whose worker died or overran its lease; how many were given back.

    Which row was running is known only when its worker held it alone: that attempt counts,
    and the row is due again, or dead once it was the last, with a reason that says why.
    Rows a worker held together are given back with the attempt their claim counted
    refunded (any of them may never have started) and one more interruption, so that each
    is applied alone next (processors/apply.py): a row that kills its worker is found out
    there, and the rows it shared a batch with are not charged for it. Each row given back
    leaves a line in the failure log.

    On Postgres one statement: the guarded update, its failure log written from the rows it
    returns. SQLite, where one writer holds the database, writes the log from the same
    selection first, then the update.
    """
    params = {"now": now, "limit": limit, "max_attempts": policy.max_attempts}
    if on_postgres(session):
        return len(_RELEASE_AND_LOG.rows(session, **params))
    _LOG_EXPIRED.rows(session, **params)
    return len(_RELEASE.rows(session, **params))


def _expired() -> Any:
    """The rows whose lease ran out, oldest lease first, locked (skipping rows another
    sweeper holds), each with how many rows its lease owner holds in all (all of a claim's
    rows expire together) and what becomes of it. Parameters: now, limit, max_attempts."""
    row, held_by = events.alias("expiring"), events.alias("held_by")
    held = (
        select(func.count())
        .where(
            held_by.c.status == Status.PROCESSING.value,
            held_by.c.lease_owner == row.c.lease_owner,
        )
        .scalar_subquery()
    )
    return (
        select(row.c.id, row.c.lease_owner, row.c.attempts, row.c.interruptions, held.label("held"))
        .where(row.c.status == Status.PROCESSING.value, row.c.lease_expires_at <= bindparam("now"))
        .order_by(row.c.lease_expires_at, row.c.id)  # one order, read twice on SQLite
        .limit(bindparam("limit"))
        .with_for_update(skip_locked=True)
        # A CTE runs once: a subquery may be run again for each row updated, each time
        # skipping the rows this statement already changed, and so release past `limit`.
        .cte("expired")
    )


_x = _expired()
_alone = _x.c.held <= 1
#: The attempt that ran counts when the worker held the row alone; else it is refunded.
_attempts = case((_alone, _x.c.attempts), (_x.c.attempts > 0, _x.c.attempts - 1), else_=0)
_dead = and_(_alone, _x.c.attempts >= bindparam("max_attempts"))
_times = case((_x.c.interruptions == 0, literal(" time")), else_=literal(" times"))
_reason = case(
    (
        _alone,
        literal("worker died or lease expired ")
        + cast(_x.c.interruptions + 1, Text)
        + _times
        + literal(" while applying it"),
    ),
    else_=literal("worker died or lease expired while it held ")
    + cast(_x.c.held, Text)
    + literal(" rows: no attempt counted, applied alone next"),
)


def _outcome(dead: Any) -> Any:
    """What the failure log says became of a row given back, `dead` or not."""
    return case((dead, literal("dead")), else_=literal("lease-expired"))


_release = (
    update_of(events)
    .where(
        events.c.id == _x.c.id,
        events.c.status == Status.PROCESSING.value,
        events.c.lease_owner == _x.c.lease_owner,
    )
    .values(
        status=case((_dead, Status.DEAD.value), else_=Status.PENDING.value),
        attempts=_attempts,
        interruptions=_x.c.interruptions + 1,
        next_attempt_at=case((_dead, None), else_=bindparam("now")),
        lease_owner=None,
        lease_expires_at=None,
        last_error=_reason,
        processed_at=case((_dead, bindparam("now"))),
    )
)
_LOG_COLUMNS = ["event_id", "attempt", "failed_at", "error", "outcome", "worker"]
#: Give back the expired rows (Postgres: with their failure log, one statement); one row
#: of the log's id each. Parameters: now, limit, max_attempts.
_released = _release.returning(
    events.c.id,
    _x.c.attempts.label("attempt"),
    events.c.last_error,
    events.c.status,
    _x.c.lease_owner,
).cte("released")
_RELEASE_AND_LOG = Query(
    insert(_failures)
    .from_select(
        _LOG_COLUMNS,
        select(
            _released.c.id,
            _released.c.attempt,
            bindparam("now"),
            _released.c.last_error,
            _outcome(_released.c.status == Status.DEAD.value),
            _released.c.lease_owner,
        ),
    )
    .add_cte(_released)
    .returning(_failures.c.id)
)
#: Log the expired rows as given back, with what becomes of each (SQLite, before _RELEASE).
_LOG_EXPIRED = Query(
    insert(_failures)
    .from_select(
        _LOG_COLUMNS,
        select(
            _x.c.id, _x.c.attempts, bindparam("now"), _reason, _outcome(_dead), _x.c.lease_owner
        ),
    )
    .returning(_failures.c.id)
)
#: Give back the expired rows (SQLite); their ids. Parameters: now, limit, max_attempts.
_RELEASE = Query(_release.returning(events.c.id))


def due_ids(
    session: Session, *, now: datetime, limit: int = 1000, fresh_grace: timedelta | None = None
) -> list[int]:
    """Ids of pending rows whose time has come, oldest first: the sweeper rings for these.

    `fresh_grace` leaves out rows never tried and received less than that long ago: the
    ingress rang them a moment ago. Retries and released rows are due the moment they are.
    """
    if fresh_grace is None:
        rows = _DUE_IDS.rows(session, now=now, limit=limit)
    else:
        rows = _DUE_IDS_BUT_FRESH.rows(session, now=now, limit=limit, fresh_since=now - fresh_grace)
    return [id_ for (id_,) in rows]


_due = (
    select(events.c.id)
    .where(events.c.status == Status.PENDING.value, events.c.next_attempt_at <= bindparam("now"))
    .order_by(events.c.next_attempt_at, events.c.id)  # the due index's order
    .limit(bindparam("limit"))
)
#: Pending rows whose time has come. Parameters: now, limit.
_DUE_IDS = Query(_due)
#: The same, but rows never tried received after `fresh_since`. Parameters: now, limit,
#: fresh_since.
_DUE_IDS_BUT_FRESH = Query(
    _due.where(~((events.c.attempts == 0) & (events.c.received_at > bindparam("fresh_since"))))
)
