"""The statements of the storage operations and of a batch of events, run one way per
dialect on the session: on Postgres as psycopg's own, prepared, on the session's
connection (outbox/prepared.py), on SQLite through the session.

`Query(build)` is a named statement, built once per dialect. `build(one_of)` makes it,
where `one_of(column, name)` stands for `column IN :name`, the list given as the one
parameter `name`. On Postgres that is `= ANY(:name)`, one array parameter: an IN list of
N values is N named parameters, which psycopg checks and binds one by one in Python (a
fifth of a 50-checkout batch's worker CPU), and another statement text for every N.
SQLite has no arrays: there it is an expanding IN. `query.rows(session, **params)` runs
it with exactly its parameters and returns plain tuples; on Postgres without
SQLAlchemy's result processing, whose Python on every one of a batch's reads drained the
mix about 8 % slower (bench.compare --part mix).

`insert_all(session, table, rows)` inserts a batch's new rows of one table with one
statement whatever their number; `update_all` writes rows over theirs the same way, and
`write_over` writes mapped rows changed in memory with it. On Postgres the rows travel
as one JSON array that `json_populate_recordset` reads into the table's row type, in
their order. An executemany (what SQLite gets) sends an INSERT per row: psycopg dumps
each parameter of each row and Postgres runs each insert, which for a batch of 50
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
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import ColumnElement, Table, any_, bindparam, insert, update
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session
from sqlalchemy.types import TypeDecorator

from outbox.driver.prepared import CompiledStatement, SessionDriver


def on_postgres(session: Session) -> bool:
    """Whether the session's database is Postgres (where a statement may take arrays)."""
    return session.get_bind().dialect.name == "postgresql"


def one_of(column: Any, name: str, dialect: str) -> ColumnElement[bool]:
    """`column IN :name` on `dialect`, the list given as the parameter `name` (see the
    module doc)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql  # not loaded by commands on SQLite

        return column == any_(bindparam(name, type_=postgresql.ARRAY(column.type)))  # type: ignore[no-any-return]
    return column.in_(bindparam(name, expanding=True))  # type: ignore[no-any-return]


#: `one_of` of a dialect, as `build` receives it: `one_of(column, name)`.
OneOf = Callable[[Any, str], ColumnElement[bool]]


class Query:
    """A named statement, built once per dialect, run with exactly its parameters (a
    TypeError names them otherwise, on either database).

    `build` is the statement itself, or a function of `one_of` making it (see the module
    doc) when it takes a list:

        _KEYS = Query(lambda one_of: select(T.c.id).where(one_of(T.c.key, "keys")))
        _KEYS.rows(session, keys=["a", "b"])  # [(id,), ...]
    """

    def __init__(self, build: Callable[[OneOf], Any] | Any) -> None:
        self._build = build if callable(build) else (lambda _one_of: build)
        self._built: dict[str, CompiledStatement] = {}

    def rows(self, session: Session, **params: Any) -> list[tuple[Any, ...]]:
        """Every row the statement returns, as plain tuples."""
        result, on_postgres = self._execute(session, params)
        return result.fetchall() if on_postgres else [tuple(row) for row in result]  # type: ignore[no-any-return]

    def count(self, session: Session, **params: Any) -> int:
        """The number of rows the statement changed."""
        result, _ = self._execute(session, params)
        return result.rowcount  # type: ignore[no-any-return]

    def statement(self, dialect: str) -> Any:
        """The Core statement on the dialect of this name."""
        from sqlalchemy.dialects import postgresql, sqlite

        dialects = {"postgresql": postgresql.dialect, "sqlite": sqlite.dialect}
        return (self._built.get(dialect) or self._for(dialects[dialect]())).statement

    def _execute(self, session: Session, params: dict[str, Any]) -> tuple[Any, bool]:
        """The statement's result (psycopg's cursor on Postgres, the session's result
        elsewhere), and whether it ran on Postgres."""
        connection = session.connection()
        dialect = connection.dialect
        built = self._built.get(dialect.name) or self._for(dialect)
        if params.keys() != built.named:
            raise TypeError(f"the statement needs exactly the parameters {sorted(built.named)}")
        if dialect.name == "postgresql":
            return built.execute(SessionDriver(connection), params), True
        return session.execute(built.statement, params), False

    def _for(self, dialect: Dialect) -> CompiledStatement:
        name = dialect.name
        statement = self._build(lambda column, list_name: one_of(column, list_name, name))
        built = self._built[name] = CompiledStatement(statement, dialect)
        return built


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
