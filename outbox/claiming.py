"""Claiming due rows: a worker takes pending rows whose time has come under a lease, in
each object's turn, so that two workers never hold one row and the events of one object
are never applied side by side.

claim          -- up to a limit of due rows (only among some ids when given)
claim_for_pass -- the due rows a message named first, then others, in one statement

The SQL is built here once, with SQLAlchemy Core, and run as outbox/driver/statements.py's
`Query` (psycopg's own, prepared, on Postgres; the session on SQLite). Callers pass the
session and the time; nothing here commits.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Table,
    all_,
    any_,
    bindparam,
    exists,
    func,
    or_,
    select,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.functions import FunctionElement

from outbox.db import UTCDateTime
from outbox.driver.statements import Query, on_postgres
from outbox.models import IN_LINE, Status, WebhookEvent

events: Table = WebhookEvent.__table__  # type: ignore[assignment]


def new_lease_owner() -> str:
    """A token unique to one claim, so a stale worker cannot finish a row claimed again."""
    return f"{socket.gethostname()[:24]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True)
class ClaimedEvent:
    """A row this worker owns until `lease_expires_at`, with everything a handler needs."""

    id: int
    source: str
    delivery_id: str
    event_type: str
    livemode: bool | None
    raw_body: bytes | None
    headers: dict[str, Any]
    attempts: int
    lease_owner: str
    lease_expires_at: datetime
    installation_id: int | None = None
    stripe_account: str | None = None
    account_id: int | None = None
    object_id: str | None = None
    provider_created_at: datetime | None = None
    backfilled: bool = False
    #: Times a worker died or lost its lease holding this row: 1 or more, it is applied alone.
    interruptions: int = 0
    #: The trace context the ingress kept on the row (None: tracing was off).
    trace_parent: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _order_key(table: Any) -> Any:
    """Events of one object are applied in the provider's created order, then arrival order."""
    return tuple_(func.coalesce(table.c.provider_created_at, table.c.received_at), table.c.id)


def _due(candidate: Any, *, turn: bool = True) -> Any:
    """The due rows of `candidate` (an alias of the table), oldest first, locked as they are
    read and skipping rows another claim holds: pending, their time come, their object's
    turn (see _held_back), and their account not in another claim's play (see
    _account_in_play). Without `turn`, the advisory locks of the object and the account
    are left to the caller (_with_object_turn), to take only on the rows this claim locked.

    Parameters: now, owner.
    """
    held_back = _held_back(candidate)
    in_turn = ~held_back & _ObjectTurn(candidate.c.source, candidate.c.object_id)
    account_free = ~_account_in_play(candidate)
    if turn:
        account_free = account_free & _AccountTurn(candidate.c.account_id)
    return (
        select(candidate.c.id, candidate.c.source, candidate.c.object_id, candidate.c.account_id)
        .where(
            candidate.c.status == Status.PENDING.value,
            candidate.c.next_attempt_at <= bindparam("now"),
            or_(candidate.c.object_id.is_(None), in_turn if turn else ~held_back),
            or_(candidate.c.account_id.is_(None), account_free),
        )
        .order_by(candidate.c.next_attempt_at, candidate.c.id)
        .with_for_update(skip_locked=True)
    )


def _held_back(candidate: Any) -> Any:
    """Whether another row of the candidate's object goes first: one being processed under
    a live lease, whatever its created time (a late-arriving older event never runs beside
    a newer one), or an earlier one still in line. A dead or finished row holds nothing
    back, nor does a later row whose worker died (its lease ran out).

    One probe of ix_webhook_events_in_line, which holds exactly the pending and processing
    rows that name an object. Parameter: now.
    """
    other = events.alias("in_line")
    return exists().where(
        other.c.source == candidate.c.source,
        other.c.object_id == candidate.c.object_id,
        other.c.status.in_([s.value for s in IN_LINE]),
        or_(
            (other.c.status == Status.PROCESSING.value)
            & (other.c.lease_expires_at > bindparam("now")),
            _order_key(other) < _order_key(candidate),
        ),
    )


def _account_in_play(candidate: Any) -> Any:
    """Whether rows about the candidate's account are processing under a live lease: that
    claim's batch holds the account (processors/batch_apply.py locks a batch's accounts
    first), so a row of it taken beside them would wait its turn in another batch, carried
    on from batch to batch. Left to the claims that come after, it goes to the batch
    holding the account (its next claim runs once its own rows are finished) or to any
    batch once that one is over.

    `NOT IN` a list the statement reads once (a hashed subplan over the processing rows,
    from ix_webhook_events_lease), not a probe per row walked past. Parameters: now, owner.
    """
    in_play = events.alias("in_play")
    accounts = select(in_play.c.account_id).where(
        in_play.c.status == Status.PROCESSING.value,
        in_play.c.account_id.is_not(None),
        in_play.c.lease_expires_at > bindparam("now"),
        in_play.c.lease_owner != bindparam("owner"),  # this claim's own rows hold nothing
    )
    return candidate.c.account_id.in_(accounts)


class _ObjectTurn(FunctionElement[bool]):
    """`_ObjectTurn(source, object_id)`: true when this claim may take a row of the object
    (source, object_id) now.

    On Postgres, a transaction-scoped advisory lock on the object, tried without waiting: a
    claim not yet committed holds it, so a concurrent claim, which cannot see that claim's
    `processing` rows yet, skips the object's other rows instead of taking one beside it.
    Committed, the rows are `processing` and _held_back keeps the object's others waiting.
    SQLite has one writer at a time: always true there.
    """

    inherit_cache = True
    type = Boolean()


@compiles(_ObjectTurn, "postgresql")
def _object_turn_on_postgres(element: _ObjectTurn, compiler: Any, **kw: Any) -> str:
    source, object_id = (compiler.process(c, **kw) for c in element.clauses)
    key = f"{source} || ':' || {object_id}"
    return f"pg_try_advisory_xact_lock(hashtextextended({key}, 0))"


class _AccountTurn(FunctionElement[bool]):
    """`_AccountTurn(account_id)`: true when this claim may take a row about the account
    now: on Postgres, a transaction-scoped advisory lock on the account, tried without
    waiting, so that two claims not yet committed (neither sees the other's rows
    processing) do not both take rows of one account. SQLite has one writer at a time:
    always true there."""

    inherit_cache = True
    type = Boolean()


@compiles(_AccountTurn, "postgresql")
def _account_turn_on_postgres(element: _AccountTurn, compiler: Any, **kw: Any) -> str:
    # Keyed apart from the objects' locks: an object's key starts with its source's name.
    (account_id,) = (compiler.process(c, **kw) for c in element.clauses)
    return f"pg_try_advisory_xact_lock(hashtextextended('account:' || {account_id}, 0))"


@compiles(_ObjectTurn)
@compiles(_AccountTurn)
def _turn_elsewhere(element: Any, compiler: Any, **kw: Any) -> str:
    return "1"  # SQLite has one writer at a time: every turn is this claim's


class _IdArray(FunctionElement[Any]):
    """`_IdArray(rows.scalar_subquery())`: `ARRAY(<select of ids>)`, Postgres only.
    `id = ANY(ARRAY(...))` finds a claim's few rows by primary key, where
    `id IN (<select>)` let the planner hash-join them against a scan of every pending row
    (3.5 ms of a 5.5 ms claim over a 5,000-row backlog)."""

    inherit_cache = True
    type = postgresql.ARRAY(BigInteger())


@compiles(_IdArray, "postgresql")
def _id_array_on_postgres(element: _IdArray, compiler: Any, **kw: Any) -> str:
    # A scalar subquery is compiled in its parentheses: those are ARRAY's own.
    (rows,) = (compiler.process(c, **kw) for c in element.clauses)
    return f"ARRAY{rows}"


def _lease(rows: Any, *, by_array: bool = False) -> Any:
    """Put the pending rows whose ids `rows` selects under the new lease, returning them
    (`by_array`: looked up as one array of ids, Postgres only, see _IdArray).

    Parameters: owner, expires.
    """
    if by_array:
        # The rows were read pending and locked by this statement (a lock re-reads the
        # row's newest version and checks it again): nobody changes them before this
        # update. A status guard here would let the planner walk ix_webhook_events_due
        # instead of looking the rows up by id.
        chosen = events.c.id == any_(_IdArray(rows.scalar_subquery()))
    else:
        chosen = events.c.id.in_(rows) & (events.c.status == Status.PENDING.value)
    return (
        update(events)
        .where(chosen)
        .values(
            status=Status.PROCESSING.value,
            lease_owner=bindparam("owner"),
            lease_expires_at=bindparam("expires"),
            attempts=events.c.attempts + 1,
        )
        .returning(*_claimed_columns())
    )


def _claim_statement(one_of: Any = None) -> Any:
    """The guarded claim, built once: SQLAlchemy then reuses its compiled form (building and
    compiling it for every claim cost more Python time than the claim takes on the server).

    Parameters: now, limit, owner, expires; with `one_of` (see outbox.driver.statements.Query),
    only among the list `ids`.
    """
    candidate = events.alias("candidate")
    due = _due(candidate).limit(bindparam("limit"))
    if one_of is not None:
        due = due.where(one_of(candidate.c.id, "ids"))
    # A CTE runs once; an IN (subquery) may be run again per row, each time picking
    # other rows among equal due times, and so claim more than `limit`.
    due_rows = due.cte("due")
    return _lease(select(due_rows.c.id))


def _claim_for_pass_statement() -> Any:
    """claim() among the ids, then claim() of the others for what is left of the limit, as
    one Postgres statement (sent by claim_for_pass on the session's psycopg connection).

    Each CTE runs once and in this order (the second's LIMIT reads the first), so the rows
    locked are the rows updated. The ids are one array parameter: one statement text for
    any number of them. Parameters: ids, now, limit, owner, expires.
    """
    ids = bindparam("ids", type_=postgresql.ARRAY(BigInteger))
    named_candidate, other_candidate = events.alias("named_candidate"), events.alias("candidate")
    named = _with_object_turn(
        _due(named_candidate, turn=False)
        .where(named_candidate.c.id == any_(ids))
        # In id order, which only the primary key gives without a sort (see
        # _WALK_THE_DUE_INDEX); the limit is never below the ids' number (processors/apply.py).
        .order_by(None)
        .order_by(named_candidate.c.id)
        .limit(bindparam("limit"))
        .cte("named_locked"),
        "named",
    )
    named_count = select(func.count()).select_from(named).scalar_subquery()
    others = _with_object_turn(
        _due(other_candidate, turn=False)
        .where(other_candidate.c.id != all_(ids))
        .limit(func.greatest(0, bindparam("limit") - named_count))
        .cte("others_locked"),
        "others",
    )
    return _lease(union_all(select(named.c.id), select(others.c.id)), by_array=True)


def _with_object_turn(locked: Any, name: str) -> Any:
    """Of the rows a claim locked, those whose object's and account's advisory locks it also
    gets (see _ObjectTurn, _AccountTurn): taken only on the rows it is about to lease, never
    on the candidates it walked past, so that a claim does not keep a concurrent one off
    objects and accounts it does not take."""
    turn = or_(locked.c.object_id.is_(None), _ObjectTurn(locked.c.source, locked.c.object_id))
    account_turn = or_(locked.c.account_id.is_(None), _AccountTurn(locked.c.account_id))
    return select(locked.c.id).where(turn, account_turn).cte(name)


def claim(
    session: Session,
    *,
    now: datetime,
    lease: timedelta,
    limit: int = 10,
    ids: Sequence[int] | None = None,
    owner: str | None = None,
) -> list[ClaimedEvent]:
    """Take up to `limit` due rows (only among `ids` when given) under a new lease.

    A row is due when it is pending, its next attempt time has come, and it is its
    object's turn: no other row of the object is processing under a live lease (whatever
    its created time), none created earlier is still pending or processing, and no
    concurrent claim is taking one (a dead or finished row does not block).
    Postgres skips rows another worker is claiming; SQLite has one writer at a time.
    """
    params: dict[str, Any] = {
        "now": now,
        "limit": limit,
        "owner": owner or new_lease_owner(),
        "expires": now + lease,
    }
    if ids is None:
        rows = _CLAIM_DUE.rows(session, **params)
    elif not ids:
        return []
    else:
        rows = _CLAIM_DUE_AMONG_IDS.rows(session, ids=list(ids), **params)
    return sorted((_claimed(r) for r in rows), key=lambda c: c.id)


def claim_for_pass(
    session: Session,
    *,
    now: datetime,
    lease: timedelta,
    limit: int,
    ids: Sequence[int] = (),
    owner: str | None = None,
) -> list[ClaimedEvent]:
    """Take the due rows among `ids` first, then other due rows, up to `limit` in all,
    under one new lease (a processing pass: the rows its message named, then more).

    `claim` twice in turn, as one statement on Postgres: a pass whose named rows are
    already taken (most messages once a backlog is rung) then costs one round trip.
    """
    owner = owner or new_lease_owner()
    if not on_postgres(session):
        claimed = claim(session, now=now, lease=lease, limit=limit, ids=ids, owner=owner)
        if len(claimed) < limit:
            claimed += claim(session, now=now, lease=lease, limit=limit - len(claimed), owner=owner)
        return claimed
    _WALK_THE_DUE_INDEX.rows(session)
    rows = _CLAIM_FOR_PASS.rows(
        session, ids=list(ids), now=now, limit=limit, owner=owner, expires=now + lease
    )
    return sorted((_claimed(r) for r in rows), key=lambda c: c.id)


def _claimed_columns() -> list[Any]:
    c = events.c
    return [
        c.id,
        c.source,
        c.delivery_id,
        c.event_type,
        c.livemode,
        c.raw_body,
        c.headers,
        c.attempts,
        c.lease_owner,
        c.lease_expires_at,
        c.installation_id,
        c.stripe_account,
        c.account_id,
        c.object_id,
        c.provider_created_at,
        c.backfilled,
        c.interruptions,
        c.trace_parent,
    ]


#: Take up to a limit of due rows under a new lease.
_CLAIM_DUE = Query(_claim_statement())
#: The same, only among the ids given.
_CLAIM_DUE_AMONG_IDS = Query(_claim_statement)
#: The due rows among the ids given first, then others, up to the limit (Postgres only).
_CLAIM_FOR_PASS = Query(_claim_for_pass_statement())
#: For the rest of the claim's transaction (the claim is its last statement): the claim
#: walks ix_webhook_events_due in claim order and stops at its limit, and finds the rows
#: its message named by primary key, in id order. The statistics of a table of finished
#: rows put the pending ones at a handful, and the planner then read every due row (a
#: bitmap scan, or an index of them and a sort), probed each one's object and sorted them
#: all: 6 ms a claim over a 5,000-row backlog, growing with the backlog, where the walk
#: takes 0.3 ms. With sorts off, only the index that holds a part's order can serve it.
#: JIT goes off with them: a Sort that partition pruning leaves in the plan (over no rows)
#: then costs 10^10, far past jit_above_cost, and compiling the claim took seconds.
_WALK_THE_DUE_INDEX = Query(
    select(
        func.set_config("enable_bitmapscan", "off", True),
        func.set_config("enable_seqscan", "off", True),
        func.set_config("enable_sort", "off", True),
        func.set_config("jit", "off", True),
    )
)
#: Positions of the claim's datetime columns (see _claimed).
_CLAIMED_TIMES = tuple(
    n for n, column in enumerate(_claimed_columns()) if isinstance(column.type, UTCDateTime)
)


def _claimed(row: Any) -> ClaimedEvent:
    # By position: the columns above are the dataclass's fields in order. psycopg gives
    # aware datetimes in the session's time zone, which UTCDateTime would have put in UTC.
    values = list(row)
    for index in _CLAIMED_TIMES:
        if values[index] is not None:
            values[index] = values[index].astimezone(UTC)
    return ClaimedEvent(*values)
