"""A batch's writes of one table, each in one statement whatever the number of rows: its
new rows (`insert_all`), its rows written over (`update_all`), and mapped rows read and
changed in memory (`write_over`). On Postgres the statement is sent prepared on the
session's connection (outbox/driver/prepared.py); SQLite gets an executemany.

On Postgres the rows travel as one JSON array that `json_populate_recordset` reads into
the table's row type, in their order. An executemany sends an INSERT per row: psycopg
dumps each parameter of each row and Postgres runs each insert, which for a batch of 50
checkouts (a ledger entry and a purchase each) cost more worker CPU than all the batch's
other statements together. Each value passes through its column type's bind processing
first, as SQLAlchemy's own insert would (a credit amount is checked, a naive datetime
refused). psycopg's own means were measured against it (`bench.compare --part mix
--rounds 3 -- --events 5000`, 2 cores, load 2-2.7): executemany in pipeline mode drained
16 % slower on bench-shaped checkouts, 9 % on realistic ones, 6 % on the mix; COPY 6 %
slower on the realistic checkouts, which write the most ledger entries and purchases.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Table, bindparam, insert, update
from sqlalchemy.orm import Session
from sqlalchemy.types import TypeDecorator

from outbox.driver.prepared import SessionDriver


def insert_all(session: Session, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert `rows` (dicts with the same keys, in the same order) into `table`, in order."""
    if not rows:
        return
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        session.execute(insert(table), list(rows))
        return
    sql = _insert(table.name, tuple(rows[0]))
    SessionDriver(connection).execute(sql, {"rows": _json(_bound(table, rows, connection.dialect))})


def update_all(session: Session, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Write `rows` (dicts with the same keys, the table's primary key among them) over the
    rows of `table` with the same key: the columns given, the others left as they are. On
    Postgres one statement whatever their number, read from one JSON array as
    `insert_all`'s rows are; an executemany runs one UPDATE per row on the server. SQLite
    gets the executemany."""
    if not rows:
        return
    (key,) = table.primary_key.columns
    columns = tuple(rows[0])
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        others: dict[str, Any] = {
            name: bindparam(f"new_{name}") for name in columns if name != key.name
        }
        statement = update(table).where(key == bindparam(f"new_{key.name}")).values(others)
        session.execute(statement, [{f"new_{k}": v for k, v in row.items()} for row in rows])
        return
    sql = _update(table.name, key.name, columns)
    SessionDriver(connection).execute(sql, {"rows": _json(_bound(table, rows, connection.dialect))})


def write_over(
    session: Session, table: Table, rows: Sequence[Any], columns: Sequence[str] = ()
) -> None:
    """Write mapped rows of `table` read and changed in memory over their rows, with
    `update_all` (one statement on Postgres), and take them out of the session, which
    would otherwise write them again at its next flush, a statement per row and set of
    columns changed. `columns`: the names written besides the primary key (all by
    default)."""
    (key,) = table.primary_key.columns
    written = [key, *(table.c[name] for name in columns)] if columns else list(table.columns)
    update_all(session, table, [{c.name: getattr(row, c.key) for c in written} for row in rows])
    for row in rows:
        session.expunge(row)


def _bound(table: Table, rows: Sequence[dict[str, Any]], dialect: Any) -> Sequence[dict[str, Any]]:
    """The rows with each value through its column type's bind processing."""
    typed = [
        (name, type_) for name in rows[0] if isinstance(type_ := table.c[name].type, TypeDecorator)
    ]
    if not typed:
        return rows
    bound = [dict(row) for row in rows]
    for row in bound:
        for name, type_ in typed:
            row[name] = type_.process_bind_param(row[name], dialect)
    return bound


_STATEMENTS: dict[tuple[str, str, tuple[str, ...]], str] = {}


def _insert(table: str, columns: tuple[str, ...]) -> str:
    statement = _STATEMENTS.get(("insert", table, columns))
    if statement is None:
        names = ", ".join(f'"{name}"' for name in columns)
        statement = _STATEMENTS[("insert", table, columns)] = (
            f'INSERT INTO "{table}" ({names}) SELECT {names} '
            f'FROM json_populate_recordset(NULL::"{table}", %(rows)s::json) '
            "WITH ORDINALITY AS r ORDER BY r.ordinality"
        )
    return statement


def _update(table: str, key: str, columns: tuple[str, ...]) -> str:
    statement = _STATEMENTS.get(("update", table, columns))
    if statement is None:
        names = ", ".join(f'"{name}" = r."{name}"' for name in columns if name != key)
        statement = _STATEMENTS[("update", table, columns)] = (
            f'UPDATE "{table}" SET {names} '
            f'FROM json_populate_recordset(NULL::"{table}", %(rows)s::json) AS r '
            f'WHERE "{table}"."{key}" = r."{key}"'
        )
    return statement


def _json(rows: Sequence[dict[str, Any]]) -> str:
    # Decimals as strings, which Postgres reads into numeric exactly; orjson refuses what
    # no UTF-8 column could hold anyway (lone surrogates) and integers past 64 bits, which
    # the standard library then writes for Postgres to refuse with the reason.
    try:
        return orjson.dumps(list(rows), default=str).decode()
    except TypeError:
        return json.dumps(list(rows), default=_json_value)


def _json_value(value: object) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)
