"""Finishing claimed rows: done, skipped, failed (back to pending later, or dead), or given
back unrun, each statement guarded by the lease, so a worker never finishes a row it no
longer owns.

finish_many     -- done and skipped rows, each with its note, in one statement per owner
mark_done / mark_skipped -- the same for one row
fail_many       -- failed rows: their new states in one statement, the failure log in one
fail            -- the same for one row
give_back_unrun -- claimed rows whose handler never started, back to pending, attempt refunded

The SQL is SQLAlchemy Core, run as outbox/driver/statements.py's `Query`. Callers pass the
session and the time; nothing here commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import BigInteger, Table, Text, bindparam, case, func, update
from sqlalchemy.dialects import postgresql

from outbox.driver.batch_writes import insert_all
from outbox.driver.statements import Query, on_postgres
from outbox.fields import clean_text
from outbox.models import EventFailure, Status, WebhookEvent
from outbox.retry import RetryPolicy

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from outbox.claiming import ClaimedEvent

events: Table = WebhookEvent.__table__  # type: ignore[assignment]
_failures: Table = EventFailure.__table__  # type: ignore[assignment]
#: Characters of an error the failure log keeps.
LOGGED_ERROR_CAP = 4000


def finish_many(
    session: Session,
    rows: Sequence[tuple[ClaimedEvent, Status, str | None]],
    now: datetime,
) -> set[int]:
    """Finish claimed rows, each with its status (done or skipped) and its note (why a
    done row changed nothing, why a row was skipped); the ids whose lease was still ours.

    On Postgres, one statement per lease owner (a batch has one, and one more for rows
    carried on from the claim before it): each row's status and note ride beside its id.
    Elsewhere, one statement per owner, status and note.
    """
    # A done row's note is kept as a stored field is (cleaned, capped); a skipped row's
    # reason is the service's own words.
    rows = [(e, st, clean_text(note) if st == Status.DONE else note) for e, st, note in rows]
    finished: set[int] = set()
    if on_postgres(session):
        by_owner: dict[str, tuple[list[int], list[str], list[str | None]]] = {}
        for event, status, note in rows:
            ids, statuses, notes = by_owner.setdefault(event.lease_owner, ([], [], []))
            ids.append(event.id)
            statuses.append(status.value)
            notes.append(note)
        for owner, (ids, statuses, notes) in by_owner.items():
            done = _FINISH_EACH_AS_GIVEN.rows(
                session, ids=ids, statuses=statuses, notes=notes, owner=owner, now=now
            )
            finished.update(id_ for (id_,) in done)
        return finished
    groups: dict[tuple[str, Status, str | None], list[int]] = {}
    for event, status, note in rows:
        groups.setdefault((event.lease_owner, status, note), []).append(event.id)
    for (owner, status, note), ids in groups.items():
        done = _FINISH.rows(
            session, ids=ids, owner=owner, now=now, finished_at=now, status=status.value, note=note
        )
        finished.update(id_ for (id_,) in done)
    return finished


def _lease_held(owner: Any) -> tuple[Any, ...]:
    """The guard of every finishing statement: the row is still processing under the lease
    of `owner` (a parameter, or a column beside each id), and that lease has not run out.
    Parameter: now."""
    return (
        events.c.status == Status.PROCESSING.value,
        events.c.lease_owner == owner,
        events.c.lease_expires_at > bindparam("now"),
    )


def _array(name: str, item: Any) -> Any:
    return bindparam(name, type_=postgresql.ARRAY(item))


_given = (
    func.unnest(_array("ids", BigInteger()), _array("statuses", Text()), _array("notes", Text()))
    .table_valued("id", "status", "note")
    .render_derived(name="v")
)
#: Finish claimed rows of one owner, each with the status and note beside its id, while the
#: lease holds (Postgres). Parameters: ids, statuses, notes (in one order), owner, now.
_FINISH_EACH_AS_GIVEN = Query(
    update(events)
    .where(
        events.c.id == _given.c.id,
        *_lease_held(bindparam("owner")),
    )
    .values(
        status=_given.c.status,
        processed_at=bindparam("now"),
        lease_owner=None,
        lease_expires_at=None,
        next_attempt_at=None,
        last_error=_given.c.note,
    )
    .returning(events.c.id)
)
#: Finish claimed rows of one owner with one status and note, while the lease holds.
#: Parameters: ids, owner, now, finished_at, status, note.
_FINISH = Query(
    lambda one_of: (
        update(events)
        .where(
            one_of(events.c.id, "ids"),
            *_lease_held(bindparam("owner")),
        )
        .values(
            status=bindparam("status"),
            processed_at=bindparam("finished_at"),
            lease_owner=None,
            lease_expires_at=None,
            next_attempt_at=None,
            last_error=bindparam("note"),
        )
        .returning(events.c.id)
    )
)


@dataclass(frozen=True)
class Failure:
    """A failed attempt at a claimed row: what went wrong, and whether it can ever apply."""

    event: ClaimedEvent
    error: str
    permanent: bool = False


def fail_many(
    session: Session, failures: Sequence[Failure], *, policy: RetryPolicy, now: datetime
) -> dict[int, Status]:
    """Record failed attempts: each row back to pending after the policy's delay, or dead
    (permanent, or no tries left), and a line in the failure log; the new status of each
    row whose lease was still ours (a row missing from the answer belongs to someone else,
    and nothing is logged for it). Two statements on Postgres whatever their number."""
    if not failures:
        return {}
    planned = []
    for failure in failures:
        event = failure.event
        dead = failure.permanent or policy.exhausted(event.attempts)
        status = Status.DEAD if dead else Status.PENDING
        next_at = None if dead else now + policy.delay(event.attempts)
        planned.append((failure, status, next_at))
    changed = _set_failed(session, planned, now)
    logged = [
        {
            "event_id": failure.event.id,
            "attempt": failure.event.attempts,
            "failed_at": now,
            "error": failure.error[:LOGGED_ERROR_CAP],
            "outcome": "dead" if status == Status.DEAD else "retry",
            "worker": failure.event.lease_owner,
        }
        for failure, status, _ in planned
        if failure.event.id in changed
    ]
    insert_all(session, _failures, logged)
    return {f.event.id: status for f, status, _ in planned if f.event.id in changed}


def _set_failed(
    session: Session, planned: list[tuple[Failure, Status, datetime | None]], now: datetime
) -> set[int]:
    """Put each failed row in its new state, if its lease is still ours; the ids changed."""
    if on_postgres(session):
        changed = _FAIL_EACH_AS_GIVEN.rows(
            session,
            ids=[f.event.id for f, _, _ in planned],
            owners=[f.event.lease_owner for f, _, _ in planned],
            statuses=[status.value for _, status, _ in planned],
            next_ats=[next_at for _, _, next_at in planned],
            errors=[f.error for f, _, _ in planned],
            now=now,
        )
        return {id_ for (id_,) in changed}
    return {
        id_
        for failure, status, next_at in planned
        for (id_,) in _FAIL_ONE.rows(
            session,
            event_id=failure.event.id,
            owner=failure.event.lease_owner,
            status=status.value,
            next_at=next_at,
            error=failure.error,
            finished_at=now if status == Status.DEAD else None,
            now=now,
        )
    }


_failed = (
    func.unnest(
        _array("ids", BigInteger()),
        _array("owners", Text()),
        _array("statuses", Text()),
        _array("next_ats", postgresql.TIMESTAMP(timezone=True)),
        _array("errors", Text()),
    )
    .table_valued("id", "owner", "status", "next_at", "error")
    .render_derived(name="v")
)
#: Put failed rows in their new states, each with its own, while its owner's lease holds
#: (Postgres). Parameters: ids, owners, statuses, next_ats, errors (in one order), now (also
#: a dead row's finishing time).
_FAIL_EACH_AS_GIVEN = Query(
    update(events)
    .where(
        events.c.id == _failed.c.id,
        *_lease_held(_failed.c.owner),
    )
    .values(
        status=_failed.c.status,
        next_attempt_at=_failed.c.next_at,
        lease_owner=None,
        lease_expires_at=None,
        last_error=_failed.c.error,
        processed_at=case((_failed.c.status == Status.DEAD.value, bindparam("now"))),
    )
    .returning(events.c.id)
)
#: Put one failed row in its new state while its owner's lease holds. Parameters: event_id,
#: owner, status, next_at, error, finished_at (None unless dead), now.
_FAIL_ONE = Query(
    update(events)
    .where(
        events.c.id == bindparam("event_id"),
        *_lease_held(bindparam("owner")),
    )
    .values(
        status=bindparam("status"),
        next_attempt_at=bindparam("next_at"),
        lease_owner=None,
        lease_expires_at=None,
        last_error=bindparam("error"),
        processed_at=bindparam("finished_at"),
    )
    .returning(events.c.id)
)


def mark_done(
    session: Session, event: ClaimedEvent, now: datetime, *, note: str | None = None
) -> bool:
    """Finish a claimed row as done; False when the lease is no longer ours (do not commit then).

    `note` says why its handler changed nothing (kept in `last_error`, as a skipped row's
    reason is; a done row has no error).
    """
    return event.id in finish_many(session, [(event, Status.DONE, note)], now)


def mark_skipped(session: Session, event: ClaimedEvent, reason: str, now: datetime) -> bool:
    """Finish a claimed row that nothing applies (no handler, wrong mode); False if not ours."""
    return event.id in finish_many(session, [(event, Status.SKIPPED, reason)], now)


def fail(
    session: Session,
    event: ClaimedEvent,
    error: str,
    *,
    policy: RetryPolicy,
    now: datetime,
    permanent: bool = False,
) -> Status | None:
    """Record a failed attempt: back to pending after a backoff delay, or dead.

    Returns the row's new status, or None when the lease was no longer ours.
    """
    return fail_many(session, [Failure(event, error, permanent)], policy=policy, now=now).get(
        event.id
    )


def give_back_unrun(
    session: Session, claimed: Sequence[ClaimedEvent], now: datetime, *, due: datetime | None = None
) -> set[int]:
    """Put claimed rows whose handler never started back to pending, due at `due` (now by
    default), refunding the attempt their claim counted; the ids whose lease was still ours."""
    given_back: set[int] = set()
    by_owner: dict[str, list[int]] = {}
    for event in claimed:
        by_owner.setdefault(event.lease_owner, []).append(event.id)
    for owner, ids in by_owner.items():
        rows = _GIVE_BACK.rows(session, ids=ids, owner=owner, now=now, due=due or now)
        given_back.update(id_ for (id_,) in rows)
    return given_back


#: Put claimed rows of one owner back to pending, attempt refunded, while the lease holds.
#: Parameters: ids, owner, now, due.
_GIVE_BACK = Query(
    lambda one_of: (
        update(events)
        .where(
            one_of(events.c.id, "ids"),
            *_lease_held(bindparam("owner")),
        )
        .values(
            status=Status.PENDING.value,
            next_attempt_at=bindparam("due"),
            lease_owner=None,
            lease_expires_at=None,
            attempts=events.c.attempts - 1,
        )
        .returning(events.c.id)
    )
)
