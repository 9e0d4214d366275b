"""Finishing claimed rows: done, skipped, or failed (back to pending later, or dead), each
statement guarded by the lease, so a worker never finishes a row it no longer owns.

A batch finishes its rows in a few statements whatever their number: its done and skipped
rows in one (`finish_many`, a status and a note beside each id), its failed rows in two
(`fail_many`: their new states in one, the failure log in one). outbox/store.py keeps the
one-row forms (`mark_done`, `mark_skipped`, `fail`) on top of these.

Callers pass the session and the time; nothing here commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Table, bindparam, update

from outbox.db import ListQuery, insert_rows, postgres_driver
from outbox.fields import clean_text
from outbox.models import EventFailure, Status, WebhookEvent
from outbox.retry import RetryPolicy

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from outbox.store import ClaimedEvent

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
    driver = postgres_driver(session)
    if driver is not None:
        by_owner: dict[str, tuple[list[int], list[str], list[str | None]]] = {}
        for event, status, note in rows:
            ids, statuses, notes = by_owner.setdefault(event.lease_owner, ([], [], []))
            ids.append(event.id)
            statuses.append(status.value)
            notes.append(note)
        for owner, (ids, statuses, notes) in by_owner.items():
            params = {"ids": ids, "statuses": statuses, "notes": notes, "owner": owner,
                      "now": now}  # fmt: skip
            finished.update(id_ for (id_,) in driver.execute(_FINISH_ON_POSTGRES, params))
        return finished
    groups: dict[tuple[str, Status, str | None], list[int]] = {}
    for event, status, note in rows:
        groups.setdefault((event.lease_owner, status, note), []).append(event.id)
    for (owner, status, note), ids in groups.items():
        done = _FINISH.rows(
            session, ids, owner=owner, now=now, finished_at=now, status=status.value, note=note
        )
        finished.update(id_ for (id_,) in done)
    return finished


#: Parameters: ids, statuses, notes (in the same order), owner, now (also the finishing time).
_FINISH_ON_POSTGRES = (
    "UPDATE webhook_events AS e SET status = v.status, processed_at = %(now)s, "
    "lease_owner = NULL, lease_expires_at = NULL, next_attempt_at = NULL, last_error = v.note "
    "FROM unnest(%(ids)s::bigint[], %(statuses)s::text[], %(notes)s::text[]) "
    "AS v(id, status, note) "
    f"WHERE e.id = v.id AND e.status = '{Status.PROCESSING.value}' "
    "AND e.lease_owner = %(owner)s AND e.lease_expires_at > %(now)s RETURNING e.id"
)
#: Built once. Parameters: the ids, owner, now, finished_at, status, note.
_FINISH = ListQuery(
    lambda one_of: (
        update(events)
        .where(
            one_of(events.c.id),
            events.c.status == Status.PROCESSING.value,
            events.c.lease_owner == bindparam("owner"),
            events.c.lease_expires_at > bindparam("now"),
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
    insert_rows(session, _failures, logged)
    return {f.event.id: status for f, status, _ in planned if f.event.id in changed}


def _set_failed(
    session: Session, planned: list[tuple[Failure, Status, datetime | None]], now: datetime
) -> set[int]:
    """Put each failed row in its new state, if its lease is still ours; the ids changed."""
    driver = postgres_driver(session)
    if driver is not None:
        params = {
            "ids": [f.event.id for f, _, _ in planned],
            "owners": [f.event.lease_owner for f, _, _ in planned],
            "statuses": [status.value for _, status, _ in planned],
            "next_ats": [next_at for _, _, next_at in planned],
            "errors": [f.error for f, _, _ in planned],
            "now": now,
        }
        return {id_ for (id_,) in driver.execute(_FAIL_ON_POSTGRES, params)}
    changed: set[int] = set()
    for failure, status, next_at in planned:
        result = session.execute(
            update(WebhookEvent)
            .where(
                WebhookEvent.id == failure.event.id,
                WebhookEvent.status == Status.PROCESSING.value,
                WebhookEvent.lease_owner == failure.event.lease_owner,
            )
            .values(
                status=status.value,
                next_attempt_at=next_at,
                lease_owner=None,
                lease_expires_at=None,
                last_error=failure.error,
                processed_at=now if status == Status.DEAD else None,
            )
            .execution_options(synchronize_session=False)
        )
        if result.rowcount == 1:  # type: ignore[attr-defined]
            changed.add(failure.event.id)
    return changed


#: Parameters: ids, owners, statuses, next_ats, errors (in the same order), now (a dead
#: row's finishing time).
_FAIL_ON_POSTGRES = (
    "UPDATE webhook_events AS e SET status = v.status, next_attempt_at = v.next_at, "
    "lease_owner = NULL, lease_expires_at = NULL, last_error = v.error, "
    f"processed_at = CASE WHEN v.status = '{Status.DEAD.value}' THEN %(now)s END "
    "FROM unnest(%(ids)s::bigint[], %(owners)s::text[], %(statuses)s::text[], "
    "%(next_ats)s::timestamptz[], %(errors)s::text[]) AS v(id, owner, status, next_at, error) "
    f"WHERE e.id = v.id AND e.status = '{Status.PROCESSING.value}' "
    "AND e.lease_owner = v.owner RETURNING e.id"
)
