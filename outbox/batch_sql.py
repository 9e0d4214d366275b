"""The two shapes of statement a batch of events needs, each with one parameter for the
whole batch on Postgres: a column matched against a list, and a table's new rows.

`one_of(column, name, dialect)` is `column IN :name`. On Postgres it is `= ANY(:name)`,
one array parameter: an IN list of N values is N named parameters, which psycopg checks
and binds one by one in Python (a fifth of a 50-checkout batch's worker CPU), and
another statement text for every N. SQLite has no arrays: there it is an expanding IN.
A statement using it is built once per dialect (`functools.cache` on the dialect name).

`insert_all(session, table, rows)` inserts a batch's new rows of one table with one
statement whatever their number. On Postgres the rows travel as one JSON array that
`json_populate_recordset` reads into the table's row type, in their order. An
executemany (what SQLite gets) sends an INSERT per row: psycopg dumps each parameter of
each row and Postgres runs each insert, which for a batch of 50 checkouts (a ledger
entry and a purchase each) cost more worker CPU than all the batch's other statements
together. Each value passes through its column type's bind processing first, as
SQLAlchemy's own insert would (a credit amount is checked, a naive datetime refused).
psycopg's own means were measured against it (`bench.compare --part mix --rounds 3 --
--events 5000`, 2 cores, load 2-2.7): executemany in pipeline mode drained 16 % slower on
bench-shaped checkouts, 9 % on realistic ones, 6 % on the mix; COPY 6 % slower on the
realistic checkouts, which write the most ledger entries and purchases.

These are statement shapes on the session, which the domain's batch paths and the
outbox's failure log both use; the driver's own connection stays in outbox/driver.py.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import ColumnElement, Table, any_, bindparam, insert, update
from sqlalchemy.orm import Session
from sqlalchemy.types import TypeDecorator


def dialect_of(session: Session) -> str:
    return session.get_bind().dialect.name


def one_of(column: Any, name: str, dialect: str) -> ColumnElement[bool]:
    """`column IN :name`, the list given as the parameter `name` (see the module doc)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql  # not loaded by commands on SQLite

        return column == any_(bindparam(name, type_=postgresql.ARRAY(column.type)))  # type: ignore[no-any-return]
    return column.in_(bindparam(name, expanding=True))  # type: ignore[no-any-return]


def rows(session: Session, statement: Any, **params: Any) -> list[tuple[Any, ...]]:
    """The rows of a Core select built once by its caller (kept, e.g. `functools.cache`d),
    as plain tuples. On Postgres it runs as a prepared statement on the session's own
    psycopg connection without SQLAlchemy's result processing (outbox/driver.py's
    `Statement`): a batch's reads run on every batch, and through the session each cost
    the Python of SQLAlchemy's execution and result rows, which drained the mix about 8 %
    slower (bench.compare --part mix). A time comes back in the session's zone, a numeric
    as a Decimal; elsewhere (SQLite) through the session."""
    from outbox.driver import Statement

    prepared = _PREPARED.get(id(statement))
    if prepared is None or prepared.statement is not statement:
        prepared = _PREPARED[id(statement)] = Statement(statement)
    return prepared.rows(session, **params)


#: The driver statement of each select `rows` ran, by the select's identity (kept alive
#: by the Statement, so the identity is never another's).
_PREPARED: dict[int, Any] = {}


def insert_all(session: Session, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert `rows` (dicts with the same keys, in the same order) into `table`, in order."""
    if not rows:
        return
    dialect = session.get_bind().dialect
    if dialect.name != "postgresql":
        session.execute(insert(table), list(rows))
        return
    columns = tuple(rows[0])
    _on_driver(session, _insert(table.name, columns), _json(_bound(table, rows, dialect)))


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
    dialect = session.get_bind().dialect
    if dialect.name != "postgresql":
        others: dict[str, Any] = {
            name: bindparam(f"new_{name}") for name in columns if name != key.name
        }
        statement = update(table).where(key == bindparam(f"new_{key.name}")).values(others)
        session.execute(statement, [{f"new_{k}": v for k, v in row.items()} for row in rows])
        return
    sql = _update(table.name, key.name, columns)
    _on_driver(session, sql, _json(_bound(table, rows, dialect)))


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


def _on_driver(session: Session, sql: str, rows: str) -> None:
    """Run one JSON-rows statement on the session's own psycopg connection, inside its
    transaction: through SQLAlchemy's execute path a statement costs ~150 µs of Python
    (outbox/driver.py), on every batch."""
    from outbox.driver import postgres_driver

    driver = postgres_driver(session)
    assert driver is not None  # only called on Postgres
    driver.execute(sql, {"rows": rows})


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
