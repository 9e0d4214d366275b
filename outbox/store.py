"""The storage contract of the outbox: every operation on `webhook_events`, each one guarded.

record    -- insert deliveries, once each (record_async: the same on the ingress's loop)
claim     -- take due rows under a lease (claim_for_pass: named rows first, then others)
mark_done / mark_skipped / finish_many -- finish claimed rows, only while the lease is ours
fail      -- put a claimed row back with a later attempt, or make it dead
give_back_unrun -- put claimed rows whose handler never started back, attempt refunded
release_expired -- give back rows whose worker vanished (sweeper)
due_ids   -- rows that should be rung again (sweeper)
replay    -- put finished or dead rows back to be processed (operators)
retry_now -- make waiting rows due now, keeping their attempts (operators)
purge     -- drop old bodies of finished rows, keeping a tombstone (operators)

Callers pass the connection or session and the time; nothing here commits.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import (
    BigInteger,
    Boolean,
    Connection,
    Table,
    all_,
    and_,
    any_,
    bindparam,
    exists,
    func,
    insert,
    or_,
    select,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal

from outbox import finishing, libpq
from outbox.db import DriverStatement, UTCDateTime, postgres_driver
from outbox.fields import TEXT_FIELD_CAP, clean_text
from outbox.libpq import PreparedStatement, bytea_array
from outbox.models import IN_LINE, EventFailure, Status, WebhookEvent
from outbox.retry import RetryPolicy
from outbox.states import REPLAYABLE

if TYPE_CHECKING:
    import psycopg
    from psycopg import pq

events: Table = WebhookEvent.__table__  # type: ignore[assignment]

#: characters kept of a text field taken from a payload or header (the columns' width).


@dataclass  # not frozen: a frozen dataclass's __init__ cost the ingress 5 µs a webhook, this 1.5
class IncomingEvent:
    """A verified delivery, ready to be stored. Built once and never changed."""

    source: str
    delivery_id: str
    event_type: str
    raw_body: bytes
    headers: dict[str, str]
    verified_by: str | None
    livemode: bool | None = None
    installation_id: int | None = None
    stripe_account: str | None = None
    account_id: int | None = None
    object_id: str | None = None
    provider_created_at: datetime | None = None
    hook_id: str | None = None
    api_version: str | None = None
    backfilled: bool = False
    #: Rows that must never be applied are stored already finished (skipped or dead) with a reason.
    status: Status = Status.PENDING
    reason: str | None = None
    #: The ingress request's trace context (outbox/tracing.py), when tracing is on.
    trace_parent: str | None = None

    def row(self, now: datetime) -> dict[str, Any]:
        """Every column the ingress fills."""
        return {**self.fields(now), "raw_body": self.raw_body}

    def fields(self, now: datetime) -> dict[str, Any]:
        """The columns but the body, in the order of _POSTGRES_COLUMNS (the body aside)."""
        return {
            "source": self.source,
            "delivery_id": clean_text(self.delivery_id),
            "event_type": clean_text(self.event_type) or "unknown",
            "livemode": self.livemode,
            "installation_id": self.installation_id,
            "stripe_account": clean_text(self.stripe_account),
            "account_id": self.account_id,
            "object_id": clean_text(self.object_id),
            "provider_created_at": self.provider_created_at,
            "hook_id": clean_text(self.hook_id, 64),
            "api_version": clean_text(self.api_version, 64),
            "headers": {k: v.replace("\x00", "") for k, v in self.headers.items()},
            "received_at": now,
            "verified_by": self.verified_by,
            "backfilled": self.backfilled,
            "status": self.status.value,
            "attempts": 0,
            "next_attempt_at": now if self.status == Status.PENDING else None,
            "last_error": self.reason,
            "processed_at": None if self.status == Status.PENDING else now,
            "trace_parent": self.trace_parent,
        }


class DeliveryIdNotStorable(ValueError):
    """A delivery id the `delivery_id` column cannot hold exactly (too long, NUL, a lone
    surrogate): stored cut or cleaned, it could equal another delivery's id."""


def exact_delivery_id(delivery_id: str) -> str:
    """`delivery_id` itself, which the store keeps exactly; raises DeliveryIdNotStorable."""
    if len(delivery_id) > TEXT_FIELD_CAP:
        raise DeliveryIdNotStorable(f"id is over {TEXT_FIELD_CAP} characters")
    if "\x00" in delivery_id:
        raise DeliveryIdNotStorable("id holds a NUL character")
    if not delivery_id.isascii():
        try:
            delivery_id.encode("utf-8")
        except UnicodeEncodeError:
            raise DeliveryIdNotStorable("id holds a lone surrogate") from None
    return delivery_id


@dataclass(frozen=True)
class Recorded:
    """What became of one incoming delivery: its row, and whether it was already there."""

    id: int
    duplicate: bool
    status: str


def record(conn: Connection, incoming: Sequence[IncomingEvent], now: datetime) -> list[Recorded]:
    """Insert each delivery once; a delivery already stored is reported as a duplicate.

    One statement for the whole batch (the ingress commits concurrent requests together).
    Results come back in the order of `incoming`.
    """
    if not incoming:
        return []
    keys = [_key(item) for item in incoming]
    unique = _first_of_each_key(keys, incoming)
    if conn.dialect.name == "postgresql":
        rows, bodies = _postgres_params(unique.values(), now)
        returned = list(conn.exec_driver_sql(_POSTGRES_INSERT, (rows.decode(), bodies)))
    else:
        stmt = (
            sqlite.insert(events)
            .on_conflict_do_nothing(index_elements=["source", "delivery_id"])
            .returning(events.c.id, events.c.source, events.c.delivery_id, events.c.status)
        )
        returned = list(conn.execute(stmt, [item.row(now) for item in unique.values()]))
    inserted = _by_key(returned)
    existing = _existing(conn, [k for k in unique if k not in inserted])
    return _answers(keys, inserted, existing)


async def record_async(
    conn: psycopg.AsyncConnection[Any], incoming: Sequence[IncomingEvent], now: datetime
) -> list[Recorded]:
    """record(), on a psycopg connection to Postgres driven by the ingress's event loop.

    Same statement, same answers; the caller's connection decides what commits when.
    """
    if not incoming:
        return []
    keys = [_key(item) for item in incoming]
    unique = _first_of_each_key(keys, incoming)
    rows, bodies = _postgres_params(unique.values(), now)
    result = await _RECORD_STATEMENT.execute(
        conn, [rows, bytea_array(bodies)], [libpq.TEXT, libpq.BINARY]
    )
    inserted = _by_key(_returned(result))
    missing = [k for k in unique if k not in inserted]
    existing: dict[tuple[str, str], tuple[int, str]] = {}
    if missing:
        sources, deliveries = [s for s, _ in missing], [d for _, d in missing]
        cursor = await conn.execute(_POSTGRES_EXISTING, (sources, deliveries))
        existing = _by_key(await cursor.fetchall())
    return _answers(keys, inserted, existing)


def _first_of_each_key(
    keys: Sequence[tuple[str, str]], incoming: Sequence[IncomingEvent]
) -> dict[tuple[str, str], IncomingEvent]:
    first_of_key: dict[tuple[str, str], IncomingEvent] = {}
    for key, item in zip(keys, incoming, strict=True):
        first_of_key.setdefault(key, item)
    return first_of_key


def _by_key(returned: Sequence[Any]) -> dict[tuple[str, str], tuple[int, str]]:
    """(source, delivery id) -> (id, status), from rows of (id, source, delivery_id, status)."""
    return {(source, delivery): (id_, status) for id_, source, delivery, status in returned}


def _answers(
    keys: Sequence[tuple[str, str]],
    inserted: dict[tuple[str, str], tuple[int, str]],
    existing: dict[tuple[str, str], tuple[int, str]],
) -> list[Recorded]:
    """One answer per incoming key, in order: the first of a key inserted is new."""
    results: list[Recorded] = []
    answered: set[tuple[str, str]] = set()
    for key in keys:
        if key in inserted and key not in answered:
            answered.add(key)
            results.append(Recorded(inserted[key][0], False, inserted[key][1]))
        else:
            id_, status = inserted.get(key) or existing[key]
            results.append(Recorded(id_, True, status))
    return results


#: The columns the ingress fills, in the order of IncomingEvent.row().
_POSTGRES_COLUMNS = (
    "source",
    "delivery_id",
    "event_type",
    "livemode",
    "installation_id",
    "stripe_account",
    "account_id",
    "object_id",
    "provider_created_at",
    "hook_id",
    "api_version",
    "raw_body",
    "headers",
    "received_at",
    "verified_by",
    "backfilled",
    "status",
    "attempts",
    "next_attempt_at",
    "last_error",
    "processed_at",
    "trace_parent",
)
# A batch is two parameters whatever its size: the bodies as one binary bytea[] (sent as
# they are, never re-encoded) and every other field as one JSON array of rows, which
# Postgres reads into the table's own row type. One array per column cost psycopg and
# libpq ~0.4 ms of Python and C per batch, more than the rows themselves in small ones.
_INSERT_TEMPLATE = (
    f"INSERT INTO webhook_events ({', '.join(_POSTGRES_COLUMNS)}) "
    f"SELECT {', '.join('b.raw_body' if c == 'raw_body' else f'r.{c}' for c in _POSTGRES_COLUMNS)} "
    "FROM json_populate_recordset(NULL::webhook_events, {rows}::json) WITH ORDINALITY AS r "
    "JOIN unnest({bodies}::bytea[]) WITH ORDINALITY AS b(raw_body, n) ON b.n = r.ordinality "
    "ON CONFLICT (source, delivery_id) DO NOTHING RETURNING id, source, delivery_id, status"
)
_POSTGRES_INSERT = _INSERT_TEMPLATE.format(rows="%b", bodies="%b")
#: The same INSERT for the ingress's loop, sent through libpq (see outbox.libpq).
_RECORD_STATEMENT = PreparedStatement(
    "outbox_record_events", _INSERT_TEMPLATE.format(rows="$1", bodies="$2")
)


_POSTGRES_EXISTING = (
    "SELECT id, source, delivery_id, status FROM webhook_events "
    "WHERE (source, delivery_id) IN (SELECT * FROM unnest(%b::text[], %b::text[]))"
)


def _postgres_params(items: Iterable[IncomingEvent], now: datetime) -> tuple[bytes, list[bytes]]:
    """The JSON rows (without their bodies) and the bodies, in the same order."""
    fields, bodies = [], []
    for item in items:
        fields.append(item.fields(now))
        bodies.append(item.raw_body)
    return _encode_rows(fields), bodies


def _encode_rows(rows: list[dict[str, Any]]) -> bytes:
    # orjson writes datetimes as ISO 8601 itself, at a tenth of json's cost per row; the
    # fields are clean UTF-8 (clean_text), so the fallback is for what nobody has seen yet.
    try:
        return orjson.dumps(rows)
    except TypeError:
        return _encode_rows_slowly(rows).encode()


def _iso(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not a column value")


_encode_rows_slowly = json.JSONEncoder(default=_iso).encode


def _returned(result: pq.abc.PGresult) -> list[tuple[int, str, str, str]]:
    """The RETURNING rows of a libpq result in text format: id, source, delivery_id, status."""
    value = result.get_value

    def text(n: int, column: int) -> str:
        raw = value(n, column)
        return raw.decode() if raw is not None else ""

    return [(int(text(n, 0)), text(n, 1), text(n, 2), text(n, 3)) for n in range(result.ntuples)]


def _key(item: IncomingEvent) -> tuple[str, str]:
    return (item.source, clean_text(item.delivery_id) or "")


def _existing(
    conn: Connection, keys: list[tuple[str, str]]
) -> dict[tuple[str, str], tuple[int, str]]:
    if not keys:
        return {}
    query = select(events.c.id, events.c.source, events.c.delivery_id, events.c.status).where(
        tuple_(events.c.source, events.c.delivery_id).in_(keys)
    )
    return _by_key(list(conn.execute(query)))


# --- processing -----------------------------------------------------------------------------


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
    read and skipping rows another claim holds: pending, their time come, and their
    object's turn (see _held_back). Without `turn`, the object's advisory lock is left to
    the caller (_with_object_turn), to take only on the rows this claim locked.

    Parameter: now.
    """
    held_back = _held_back(candidate)
    in_turn = ~held_back & _ObjectTurn(candidate.c.source, candidate.c.object_id)
    return (
        select(candidate.c.id, candidate.c.source, candidate.c.object_id)
        .where(
            candidate.c.status == Status.PENDING.value,
            candidate.c.next_attempt_at <= bindparam("now"),
            or_(candidate.c.object_id.is_(None), in_turn if turn else ~held_back),
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


class _ObjectTurn(ColumnElement[bool]):
    """True when this claim may take a row of the object (source, object_id) now.

    On Postgres, a transaction-scoped advisory lock on the object, tried without waiting: a
    claim not yet committed holds it, so a concurrent claim, which cannot see that claim's
    `processing` rows yet, skips the object's other rows instead of taking one beside it.
    Committed, the rows are `processing` and _held_back keeps the object's others waiting.
    SQLite has one writer at a time: always true there.
    """

    inherit_cache = True
    type = Boolean()
    _traverse_internals = [  # noqa: RUF012  (SQLAlchemy's own declaration)
        ("source", InternalTraversal.dp_clauseelement),
        ("object_id", InternalTraversal.dp_clauseelement),
    ]

    def __init__(self, source: Any, object_id: Any) -> None:
        self.source, self.object_id = source, object_id


@compiles(_ObjectTurn, "postgresql")
def _object_turn_on_postgres(element: _ObjectTurn, compiler: Any, **kw: Any) -> str:
    source, object_id = (compiler.process(c, **kw) for c in (element.source, element.object_id))
    key = f"{source} || ':' || {object_id}"
    return f"pg_try_advisory_xact_lock(hashtextextended({key}, 0))"


@compiles(_ObjectTurn)
def _object_turn_elsewhere(element: _ObjectTurn, compiler: Any, **kw: Any) -> str:
    return "1"


class _IdArray(ColumnElement[Any]):
    """`ARRAY(<select of ids>)` on Postgres: `id = ANY(ARRAY(...))` finds a claim's few rows
    by primary key, where `id IN (<select>)` let the planner hash-join them against a scan
    of every pending row (3.5 ms of a 5.5 ms claim over a 5,000-row backlog)."""

    inherit_cache = True
    type = postgresql.ARRAY(BigInteger())
    _traverse_internals = [("rows", InternalTraversal.dp_clauseelement)]  # noqa: RUF012

    def __init__(self, rows: Any) -> None:
        self.rows = rows


@compiles(_IdArray, "postgresql")
def _id_array_on_postgres(element: _IdArray, compiler: Any, **kw: Any) -> str:
    return f"ARRAY({compiler.process(element.rows, **kw)})"


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
        chosen = events.c.id == any_(_IdArray(rows))
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


def _claim_statement(*, among_ids: bool) -> Any:
    """The guarded claim, built once: SQLAlchemy then reuses its compiled form (building and
    compiling it for every claim cost more Python time than the claim takes on the server).

    Parameters: now, limit, owner, expires, and `ids` when `among_ids`.
    """
    candidate = events.alias("candidate")
    due = _due(candidate).limit(bindparam("limit"))
    if among_ids:
        due = due.where(candidate.c.id.in_(bindparam("ids", expanding=True)))
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
    """Of the rows a claim locked, those whose object's advisory lock it also gets (see
    _ObjectTurn): taken only on the rows it is about to lease, never on the candidates it
    walked past, so that a claim does not keep a concurrent one off objects it does not
    take."""
    turn = or_(locked.c.object_id.is_(None), _ObjectTurn(locked.c.source, locked.c.object_id))
    return select(locked.c.id).where(turn).cte(name)


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
    statement = _CLAIM_DUE
    if ids is not None:
        if not ids:
            return []
        statement, params["ids"] = _CLAIM_DUE_AMONG_IDS, list(ids)
    rows = session.execute(statement, params).all()
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
    driver = postgres_driver(session)
    if driver is None:
        claimed = claim(session, now=now, lease=lease, limit=limit, ids=ids, owner=owner)
        if len(claimed) < limit:
            claimed += claim(session, now=now, lease=lease, limit=limit - len(claimed), owner=owner)
        return claimed
    params = {"ids": list(ids), "now": now, "limit": limit, "owner": owner,
              "expires": now + lease}  # fmt: skip
    driver.execute(_WALK_THE_DUE_INDEX, None)
    rows = _CLAIM_FOR_PASS.execute(driver, params).fetchall()
    return sorted((_claimed_from_driver(r) for r in rows), key=lambda c: c.id)


def _claimed_from_driver(row: Any) -> ClaimedEvent:
    # psycopg gives aware datetimes in the session's time zone, which UTCDateTime would
    # have put in UTC.
    values = list(row)
    for index in _CLAIMED_TIMES:
        if values[index] is not None:
            values[index] = values[index].astimezone(UTC)
    return ClaimedEvent(*values)


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


_CLAIM_DUE = _claim_statement(among_ids=False)
_CLAIM_DUE_AMONG_IDS = _claim_statement(among_ids=True)
_CLAIM_FOR_PASS = DriverStatement(_claim_for_pass_statement())
#: For the rest of the claim's transaction (the claim is its last statement): the claim
#: walks ix_webhook_events_due in claim order and stops at its limit, and finds the rows
#: its message named by primary key, in id order. The statistics of a table of finished
#: rows put the pending ones at a handful, and the planner then read every due row (a
#: bitmap scan, or an index of them and a sort), probed each one's object and sorted them
#: all: 6 ms a claim over a 5,000-row backlog, growing with the backlog, where the walk
#: takes 0.3 ms. With sorts off, only the index that holds a part's order can serve it.
_WALK_THE_DUE_INDEX = (
    "SELECT set_config('enable_bitmapscan', 'off', true), set_config('enable_seqscan', 'off', "
    "true), set_config('enable_sort', 'off', true)"
)
#: Positions of the claim's datetime columns (see _claimed_from_driver).
_CLAIMED_TIMES = tuple(
    n for n, column in enumerate(_claimed_columns()) if isinstance(column.type, UTCDateTime)
)


def _claimed(row: Any) -> ClaimedEvent:
    # By position: the columns above are the dataclass's fields in order (a row's
    # `_mapping` costs more than the rest of the claim's Python).
    return ClaimedEvent(*row)


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


def finish_many(
    session: Session,
    rows: Sequence[tuple[ClaimedEvent, Status, str | None]],
    now: datetime,
) -> set[int]:
    """Finish claimed rows, each done or skipped with its note, in one statement per lease
    owner (outbox/finishing.py); the ids whose lease was still ours."""
    return finishing.finish_many(session, rows, now)


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
    failure = finishing.Failure(event, error, permanent)
    return finishing.fail_many(session, [failure], policy=policy, now=now).get(event.id)


def _log_failure(
    session: Session,
    event_id: int,
    attempt: int,
    error: str,
    outcome: str,
    now: datetime,
    worker: str | None,
) -> None:
    session.execute(
        insert(EventFailure).values(
            event_id=event_id,
            attempt=attempt,
            failed_at=now,
            error=error[: finishing.LOGGED_ERROR_CAP],
            outcome=outcome,
            worker=worker,
        )
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
        rows = session.execute(
            update(WebhookEvent)
            .where(
                WebhookEvent.id.in_(ids),
                WebhookEvent.status == Status.PROCESSING.value,
                WebhookEvent.lease_owner == owner,
                WebhookEvent.lease_expires_at > now,
            )
            .values(
                status=Status.PENDING.value,
                next_attempt_at=due or now,
                lease_owner=None,
                lease_expires_at=None,
                attempts=WebhookEvent.attempts - 1,
            )
            .returning(WebhookEvent.id)
            .execution_options(synchronize_session=False)
        )
        given_back.update(rows.scalars())
    return given_back


def release_expired(
    session: Session, *, now: datetime, policy: RetryPolicy, limit: int = 500
) -> int:
    """Give back rows whose worker died or overran its lease.

    Which row was running is known only when its worker held it alone: that attempt counts,
    and the row is due again, or dead once it was the last, with a reason that says why.
    Rows a worker held together are given back with the attempt their claim counted
    refunded (any of them may never have started) and one more interruption, so that each
    is applied alone next (processors/apply.py): a row that kills its worker is found out
    there, and the rows it shared a batch with are not charged for it.
    """
    expired = session.execute(
        select(
            WebhookEvent.id,
            WebhookEvent.attempts,
            WebhookEvent.interruptions,
            WebhookEvent.lease_owner,
        )
        .where(WebhookEvent.status == Status.PROCESSING.value, WebhookEvent.lease_expires_at <= now)
        .order_by(WebhookEvent.lease_expires_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    held = _rows_held(session, {row.lease_owner for row in expired})
    released = 0
    for row in expired:
        alone = held.get(row.lease_owner, 0) <= 1
        interruptions = row.interruptions + 1
        attempts = row.attempts if alone else max(row.attempts - 1, 0)
        dead = alone and policy.exhausted(attempts)
        error = _interrupted_reason(interruptions, alone, held.get(row.lease_owner, 0))
        result = session.execute(
            update(WebhookEvent)
            .where(
                WebhookEvent.id == row.id,
                WebhookEvent.status == Status.PROCESSING.value,
                WebhookEvent.lease_owner == row.lease_owner,
            )
            .values(
                status=(Status.DEAD if dead else Status.PENDING).value,
                attempts=attempts,
                interruptions=interruptions,
                next_attempt_at=None if dead else now,
                lease_owner=None,
                lease_expires_at=None,
                last_error=error,
                processed_at=now if dead else None,
            )
            .execution_options(synchronize_session=False)
        )
        if result.rowcount == 1:  # type: ignore[attr-defined]
            released += 1
            _log_failure(
                session,
                row.id,
                row.attempts,
                error,
                "dead" if dead else "lease-expired",
                now,
                row.lease_owner,
            )
    return released


def _rows_held(session: Session, owners: set[str | None]) -> dict[str | None, int]:
    """How many rows each of these lease owners holds (all of a claim's rows expire together)."""
    if not owners:
        return {}
    return {
        owner: int(count)
        for owner, count in session.execute(
            select(WebhookEvent.lease_owner, func.count())
            .where(
                WebhookEvent.status == Status.PROCESSING.value,
                WebhookEvent.lease_owner.in_([o for o in owners if o is not None]),
            )
            .group_by(WebhookEvent.lease_owner)
        )
    }


def _interrupted_reason(interruptions: int, alone: bool, held: int) -> str:
    if alone:
        times = "1 time" if interruptions == 1 else f"{interruptions} times"
        return f"worker died or lease expired {times} while applying it"
    return (
        f"worker died or lease expired while it held {held} rows: "
        "no attempt counted, applied alone next"
    )


def due_ids(
    session: Session, *, now: datetime, limit: int = 1000, fresh_grace: timedelta | None = None
) -> list[int]:
    """Ids of pending rows whose time has come, oldest first: the sweeper rings for these.

    `fresh_grace` leaves out rows never tried and received less than that long ago: the
    ingress rang them a moment ago. Retries and released rows are due the moment they are.
    """
    query = (
        select(WebhookEvent.id)
        .where(WebhookEvent.status == Status.PENDING.value, WebhookEvent.next_attempt_at <= now)
        .order_by(WebhookEvent.next_attempt_at, WebhookEvent.id)  # the due index's order
        .limit(limit)
    )
    if fresh_grace is not None:
        query = query.where(
            ~((WebhookEvent.attempts == 0) & (WebhookEvent.received_at > now - fresh_grace))
        )
    return list(session.scalars(query))


def next_due_at(session: Session) -> datetime | None:
    """When the next pending row becomes due (None when nothing is pending)."""
    return session.scalar(
        select(func.min(WebhookEvent.next_attempt_at)).where(
            WebhookEvent.status == Status.PENDING.value
        )
    )


def replay(session: Session, ids: Sequence[int], *, now: datetime) -> list[int]:
    """Put finished or dead rows back to pending, due now, with fresh attempts.

    Rows still pending or processing are left alone (they are already in play), and so
    are purged rows, whose bodies are gone. Returns the ids that were put back.
    """
    if not ids:
        return []
    stmt = (
        update(WebhookEvent)
        .where(
            WebhookEvent.id.in_(list(ids)),
            WebhookEvent.status.in_([s.value for s in REPLAYABLE]),
            WebhookEvent.raw_body.is_not(None),
        )
        .values(
            status=Status.PENDING.value,
            next_attempt_at=now,
            attempts=0,
            interruptions=0,
            last_error=None,
            processed_at=None,
        )
        .returning(WebhookEvent.id)
        .execution_options(synchronize_session=False)
    )
    return sorted(session.scalars(stmt))


def retry_now(session: Session, ids: Sequence[int], *, now: datetime) -> list[int]:
    """Make pending rows (new, or waiting for their next attempt) due now.

    Their attempts are kept: a retry brought forward is still an attempt of the same
    series. Rows in any other status are left alone. Returns the ids made due.
    """
    if not ids:
        return []
    stmt = (
        update(WebhookEvent)
        .where(WebhookEvent.id.in_(list(ids)), WebhookEvent.status == Status.PENDING.value)
        .values(next_attempt_at=now)
        .returning(WebhookEvent.id)
        .execution_options(synchronize_session=False)
    )
    return sorted(session.scalars(stmt))


def purge(
    session: Session, *, older_than: datetime, now: datetime, limit: int | None = None
) -> int:
    """Drop the bodies of done and skipped rows received before `older_than`.

    The row stays as a tombstone (source, delivery id, type, times), so a very late
    duplicate delivery is still recognised and not applied again. With `limit`, at most
    that many rows, oldest ids first: a bounded transaction, repeated until it returns 0.
    """
    purgeable = and_(
        WebhookEvent.status.in_([Status.DONE.value, Status.SKIPPED.value]),
        WebhookEvent.received_at < older_than,
        WebhookEvent.raw_body.is_not(None),
    )
    where: ColumnElement[bool] = purgeable
    if limit is not None:
        batch = select(WebhookEvent.id).where(purgeable).order_by(WebhookEvent.id).limit(limit)
        where = WebhookEvent.id.in_(batch.scalar_subquery())
    stmt = (
        update(WebhookEvent)
        .where(where)
        .values(raw_body=None, headers={}, purged_at=now)
        .execution_options(synchronize_session=False)
    )
    return session.execute(stmt).rowcount  # type: ignore[attr-defined,no-any-return]
