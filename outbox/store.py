"""Recording deliveries in `webhook_events`, each once.

record    -- insert deliveries, once each (record_async: the same on the ingress's loop)

On Postgres a delivery is stored once through the delivery index (`webhook_deliveries`,
outbox/models.py), written in the same statement as the row: its primary key makes a
concurrent repeat wait for the first and then find it, whichever partition holds the row.
A repeat whose row is gone (its partition dropped) is still a duplicate, of status
"purged". On SQLite, the table's unique (source, delivery_id) does the same.

The other operations on the table, each guarded: outbox/claiming.py (claim),
outbox/finishing.py (done, skipped, failed, given back), outbox/recovery.py (the
sweeper's), outbox/operator_writes.py (replay, retry now, purge).

Callers pass the connection or session and the time; nothing here commits.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import Connection, Table, select, tuple_
from sqlalchemy.dialects import sqlite

from outbox.driver import libpq
from outbox.driver.libpq import PreparedStatement, bytea_array
from outbox.fields import TEXT_FIELD_CAP, clean_text
from outbox.models import Status, WebhookEvent

if TYPE_CHECKING:
    import psycopg
    from psycopg import pq

events: Table = WebhookEvent.__table__  # type: ignore[assignment]


#: The status a duplicate is answered with when its row was removed with its partition.
PURGED = "purged"

#: Characters of a row stored finished's reason kept (it may quote the webhook: its type).
REASON_CAP = 2000


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
            "last_error": clean_text(self.reason, REASON_CAP),
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
        inserted = _by_key(conn.exec_driver_sql(_POSTGRES_INSERT, (rows.decode(), bodies)).all())
        missing = [k for k in unique if k not in inserted]
        existing = (
            _by_key(conn.exec_driver_sql(_POSTGRES_EXISTING, _key_arrays(missing)).all())
            if missing
            else {}
        )
    else:
        stmt = (
            sqlite.insert(events)
            .on_conflict_do_nothing(index_elements=["source", "delivery_id"])
            .returning(events.c.id, events.c.source, events.c.delivery_id, events.c.status)
        )
        inserted = _by_key(conn.execute(stmt, [item.row(now) for item in unique.values()]).all())
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
        cursor = await conn.execute(_POSTGRES_EXISTING, _key_arrays(missing))
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
_SELECTED = ", ".join("b.raw_body" if c == "raw_body" else f"r.{c}" for c in _POSTGRES_COLUMNS)
_INSERT_TEMPLATE = (
    # The ids are taken first, so the delivery index and the row agree on them; a delivery
    # the index refuses (stored already) gets no row, and its id is never used.
    f"WITH r AS (SELECT nextval('webhook_events_id_seq') AS id, {_SELECTED} "
    "FROM json_populate_recordset(NULL::webhook_events, {rows}::json) WITH ORDINALITY AS r "
    "JOIN unnest({bodies}::bytea[]) WITH ORDINALITY AS b(raw_body, n) ON b.n = r.ordinality), "
    "d AS (INSERT INTO webhook_deliveries (source, delivery_id, event_id, received_at) "
    "SELECT source, delivery_id, id, received_at FROM r ON CONFLICT DO NOTHING "
    "RETURNING source, delivery_id) "
    f"INSERT INTO webhook_events (id, {', '.join(_POSTGRES_COLUMNS)}) "
    f"SELECT r.id, {', '.join(f'r.{c}' for c in _POSTGRES_COLUMNS)} "
    "FROM r JOIN d USING (source, delivery_id) RETURNING id, source, delivery_id, status"
)
_POSTGRES_INSERT = _INSERT_TEMPLATE.format(rows="%b", bodies="%b")
#: The same INSERT for the ingress's loop, sent through libpq (see outbox/driver/libpq.py).
_RECORD_STATEMENT = PreparedStatement(
    "outbox_record_events", _INSERT_TEMPLATE.format(rows="$1", bodies="$2")
)


#: The rows of deliveries stored already, through the delivery index: the row's own
#: partition only (id and received_at), and "purged" for a row whose partition is gone.
_POSTGRES_EXISTING = (
    f"SELECT d.event_id, d.source, d.delivery_id, coalesce(e.status, '{PURGED}') "
    "FROM unnest(%b::text[], %b::text[]) AS k(source, delivery_id) "
    "JOIN webhook_deliveries d ON d.source = k.source AND d.delivery_id = k.delivery_id "
    "LEFT JOIN webhook_events e ON e.id = d.event_id AND e.received_at = d.received_at"
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


def _key_arrays(keys: list[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """The sources and the delivery ids of some keys: _POSTGRES_EXISTING's two arrays."""
    return [source for source, _ in keys], [delivery for _, delivery in keys]


def _existing(
    conn: Connection, keys: list[tuple[str, str]]
) -> dict[tuple[str, str], tuple[int, str]]:
    if not keys:
        return {}
    query = select(events.c.id, events.c.source, events.c.delivery_id, events.c.status).where(
        tuple_(events.c.source, events.c.delivery_id).in_(keys)
    )
    return _by_key(list(conn.execute(query)))
