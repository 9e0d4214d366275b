"""Engine and session: the one place that knows how to talk to Postgres or SQLite."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import (
    ColumnElement,
    Connection,
    DateTime,
    Engine,
    Table,
    any_,
    bindparam,
    create_engine,
    event,
    insert,
    update,
)
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from outbox.driver import SQLITE_BUSY_TIMEOUT_MS, utc

POSTGRES_CONNECT_TIMEOUT = 5  #: seconds; a dead server must turn into a 503, not a hang


class Base(DeclarativeBase):
    pass


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps are always UTC and always aware, on Postgres and on SQLite alike.

    SQLite has no time zone type and hands back naive values; this puts UTC back on
    them so that comparisons in Python never mix naive and aware datetimes.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return utc(value)


def utcnow() -> datetime:
    return datetime.now(UTC)


def make_engine(
    url: str, *, pool_size: int = 10, echo: bool = False, timeout: float | None = None
) -> Engine:
    """An engine for `url`, with the settings each backend needs to be safe under concurrency.

    :param timeout: seconds one database call may take (DATABASE_TIMEOUT_SECONDS). On
        Postgres through psycopg the server cancels a statement after it, and a call with no
        answer at all costs its connection a little later (outbox/deadlines.py). None: no
        deadline (migrations, whose statements may rightly take long).
    """
    if url.startswith("sqlite"):
        engine = create_engine(url, echo=echo, connect_args={"check_same_thread": False})
        _make_sqlite_safe_for_concurrent_writers(engine)
        return engine
    kwargs: dict[str, Any] = {
        "pool_size": pool_size,
        "max_overflow": pool_size,
        "pool_pre_ping": True,
        "pool_recycle": 1800,
    }
    # Imported here: psycopg and redis cost a command on SQLite a tenth of a second.
    from outbox.deadlines import call_deadline, postgres_connect_params

    if url.startswith("postgresql"):
        kwargs["connect_args"] = {"connect_timeout": POSTGRES_CONNECT_TIMEOUT}
        if timeout is not None:
            kwargs["connect_args"] = postgres_connect_params(timeout)
    engine = create_engine(url, echo=echo, **kwargs)
    if timeout is not None and engine.dialect.driver == "psycopg":
        _give_calls_deadlines(engine, call_deadline(timeout))
    return engine


def _give_calls_deadlines(engine: Engine, deadline: float) -> None:
    from outbox.deadlines import DeadlineConnection

    # SQLAlchemy's documented hook for making the DBAPI connection ourselves.
    @event.listens_for(engine, "do_connect")
    def _connect(_dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
        connection = DeadlineConnection.connect(*cargs, **cparams)
        connection.deadline = deadline
        return connection


def _make_sqlite_safe_for_concurrent_writers(engine: Engine) -> None:
    # pysqlite opens transactions lazily, so two threads that both read then write
    # deadlock on the lock upgrade and one fails at once with "database is locked".
    # BEGIN IMMEDIATE takes the write lock up front, and busy_timeout makes the
    # other writers wait for it instead of failing.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        # A 2xx promises the webhook is stored: with WAL, NORMAL may lose the last
        # committed transactions on power loss; FULL syncs the log at every commit.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


class ListQuery:
    """A statement with one list parameter, `values`, built once per database dialect.

    `build(one_of)` makes the statement; `one_of(column)` stands for `column IN values`.
    On Postgres that is `= ANY(array)`, one parameter: an IN list of N parameters is
    another statement text for every N, which the driver parses anew each time (psycopg
    caches none over 50 parameters) and the server plans anew. SQLite has no arrays, so
    there it is an expanding IN. Built once, SQLAlchemy also reuses the compiled form.

        _FIND = ListQuery(lambda one_of: select(T.c.id).where(one_of(T.c.key)))
        session.scalars(_FIND.on(session), {"values": keys})
        _FIND.rows(session, keys)  # plain tuples, the statement sent as psycopg's own
    """

    def __init__(self, build: Callable[[Callable[[Any], ColumnElement[bool]]], Any]) -> None:
        self._build = build
        self._built: dict[str, Any] = {}
        self._on_driver: DriverStatement | None = None

    def rows(self, session: Session, values: Sequence[Any], **params: Any) -> list[tuple[Any, ...]]:
        """The statement's rows as tuples; `params` are its other parameters. On Postgres
        it is sent as a DriverStatement, for statements that run for every batch of
        events: the values are psycopg's own, without SQLAlchemy's result processing, so
        only for columns where that changes nothing on Postgres (ids, keys, numeric sums)."""
        bound = {"values": list(values), **params}
        driver = postgres_driver(session)
        if driver is None:
            return [tuple(row) for row in session.execute(self.on(session), bound)]
        if self._on_driver is None:
            self._on_driver = DriverStatement(self.on(session))
        return self._on_driver.execute(driver, bound).fetchall()  # type: ignore[no-any-return]

    def on(self, session: Session) -> Any:
        dialect = session.get_bind().dialect.name
        statement = self._built.get(dialect)
        if statement is None:
            statement = self._built[dialect] = self._build(_one_of_for(dialect))
        return statement


def _one_of_for(dialect: str) -> Callable[[Any], ColumnElement[bool]]:
    def one_of(column: Any) -> ColumnElement[bool]:
        if dialect == "postgresql":
            from sqlalchemy.dialects import postgresql  # not loaded by commands on SQLite

            array = bindparam("values", type_=postgresql.ARRAY(column.type))
            return column == any_(array)  # type: ignore[no-any-return]
        return column.in_(bindparam("values", expanding=True))  # type: ignore[no-any-return]

    return one_of


def postgres_driver(session: Session) -> DriverConnection | None:
    """The psycopg connection under the session's transaction, or None off Postgres.

    For the few statements run for every batch of events: a statement sent through
    SQLAlchemy's execute path costs ~150 µs of Python (compiling the cache key, binding,
    building a result), more than Postgres spends on it. Sent here it joins the session's
    transaction: psycopg opens it if the session has not yet, and the session commits or
    rolls it back.
    """
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        return None
    return DriverConnection(connection)


class DriverConnection:
    """Statements sent straight on a SQLAlchemy connection's psycopg connection, whose
    errors are SQLAlchemy's as if it had sent them: wrapped (an OperationalError, an
    IntegrityError, ...), and a lost server invalidating the connection and the pool, so
    callers handle a database gone the way they always did."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._driver = connection.connection.driver_connection
        self.dialect = connection.dialect

    def execute(self, sql: str, params: Any) -> Any:
        """psycopg's `execute`: a cursor holding the whole result."""
        try:
            return self._driver.execute(sql, params)  # type: ignore[union-attr]
        except self._connection.dialect.loaded_dbapi.Error as exc:
            self._connection._handle_dbapi_exception(exc, sql, params, None, None)


class DriverStatement:
    """A Core statement sent as psycopg's own on Postgres (see postgres_driver), compiled
    once, at its first use, to SQL text; each call binds only the statement's own named
    parameters. Its constants (a status compared with, a list of statuses, a number added)
    are written into the text as literals: the planner must see `status = 'pending'` to use
    a partial index, also in the generic plan of a prepared statement."""

    def __init__(self, statement: Any) -> None:
        self._statement = statement
        self._sql = ""
        self._named: frozenset[str] = frozenset()

    def execute(self, driver: DriverConnection, params: dict[str, Any]) -> Any:
        """psycopg's cursor over the statement's result; `params` are exactly its names."""
        if not self._sql:
            self._sql, self._named = _with_literal_constants(self._statement, driver.dialect)
        if set(params) != self._named:
            raise TypeError(f"the statement needs exactly the parameters {sorted(self._named)}")
        return driver.execute(self._sql, params)


def _with_literal_constants(statement: Any, dialect: Dialect) -> tuple[str, frozenset[str]]:
    compiled = statement.compile(dialect=dialect)
    sql = str(compiled)
    named = frozenset(name for name, bind in compiled.binds.items() if bind.required)
    for name, bind in compiled.binds.items():
        if name in named:
            continue
        if bind.expanding:  # `column.in_([constants])`, rendered when executed
            if not bind.value:
                raise ValueError(f"an IN of no constants ({name}) cannot be written out")
            placeholder = f"__[POSTCOMPILE_{name}]"
            literal = ", ".join(compiled.render_literal_value(v, bind.type) for v in bind.value)
        else:
            placeholder = compiled.bindtemplate % {"name": name}
            literal = compiled.render_literal_value(bind.value, bind.type)
        sql = sql.replace(placeholder, literal)
    return sql, named


def insert_rows(session: Session, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert `rows` (dicts with the same keys, in the same order) into `table`, in order.

    On Postgres this is one statement whatever their number: the rows travel as one JSON
    array that json_populate_recordset reads into the table's row type. An executemany
    sends a statement per row (psycopg dumps each parameter of each row, Postgres runs
    each insert), which for a batch of 50 cost more than all its other statements
    together. Values pass through their column type's bind processing first, as
    SQLAlchemy would (a credit amount is checked, a naive datetime refused).
    Elsewhere (SQLite) it is an executemany.
    """
    if not rows:
        return
    driver = postgres_driver(session)
    if driver is None:
        session.execute(insert(table), list(rows))
        return
    columns = tuple(rows[0])
    dialect = session.get_bind().dialect
    processed: list[tuple[str, TypeDecorator[Any]]] = [
        (name, type_) for name in columns if isinstance(type_ := table.c[name].type, TypeDecorator)
    ]
    if processed:
        rows = [dict(row) for row in rows]
        for row in rows:
            for name, type_ in processed:
                row[name] = type_.process_bind_param(row[name], dialect)
    driver.execute(_insert_rows_sql(table.name, columns), (_json_rows(rows),))


def update_rows(session: Session, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Write `rows` (dicts with the same keys, the table's primary key among them) over the
    rows of `table` with the same key: on Postgres one statement whatever their number
    (as `insert_rows`), where an ORM flush sends one statement per row and per set of
    columns changed. Elsewhere (SQLite) an executemany."""
    if not rows:
        return
    (key,) = table.primary_key.columns
    columns = tuple(rows[0])
    driver = postgres_driver(session)
    if driver is None:
        bound = [{f"new_{name}": value for name, value in row.items()} for row in rows]
        statement = (
            update(table)
            .where(key == bindparam(f"new_{key.name}"))
            .values({name: bindparam(f"new_{name}") for name in columns if name != key.name})
        )
        session.execute(statement, bound)
        return
    dialect = session.get_bind().dialect
    processed: list[tuple[str, TypeDecorator[Any]]] = [
        (name, type_) for name in columns if isinstance(type_ := table.c[name].type, TypeDecorator)
    ]
    rows = [dict(row) for row in rows]
    for row in rows:
        for name, type_ in processed:
            row[name] = type_.process_bind_param(row[name], dialect)
    names = ", ".join(f'"{name}" = r."{name}"' for name in columns if name != key.name)
    sql = (
        f'UPDATE "{table.name}" SET {names} '
        f'FROM json_populate_recordset(NULL::"{table.name}", %s::json) AS r '
        f'WHERE "{table.name}"."{key.name}" = r."{key.name}"'
    )
    driver.execute(sql, (_json_rows(rows),))


def row_values(row: Any) -> dict[str, Any]:
    """An ORM object's column values, by column name, in its table's order."""
    return {
        prop.columns[0].name: getattr(row, prop.key) for prop in sa_inspect(type(row)).column_attrs
    }


def write_over(session: Session, rows: Sequence[Any]) -> None:
    """Write changed ORM objects of one class, loaded from their rows, over those rows in one
    statement (`update_rows`), and take them out of the session, which would otherwise
    write them again at its next flush, a statement per row and set of columns changed."""
    if not rows:
        return
    update_rows(session, type(rows[0]).__table__, [row_values(row) for row in rows])
    for row in rows:
        session.expunge(row)


_INSERT_ROWS: dict[tuple[str, tuple[str, ...]], str] = {}


def _insert_rows_sql(table: str, columns: tuple[str, ...]) -> str:
    sql = _INSERT_ROWS.get((table, columns))
    if sql is None:
        names = ", ".join(f'"{name}"' for name in columns)
        sql = _INSERT_ROWS[(table, columns)] = (
            f'INSERT INTO "{table}" ({names}) SELECT {names} '
            f'FROM json_populate_recordset(NULL::"{table}", %s::json) WITH ORDINALITY AS r '
            "ORDER BY r.ordinality"
        )
    return sql


def _json_rows(rows: Sequence[dict[str, Any]]) -> str:
    # Decimals as strings, which Postgres reads into numeric exactly; orjson refuses what
    # no UTF-8 column could hold anyway (lone surrogates) and integers past 64 bits.
    try:
        return orjson.dumps(list(rows), default=str).decode()
    except TypeError:
        return json.dumps(list(rows), default=_json_value)


def _json_value(value: object) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: Callable[[], Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error."""
    with factory() as session, session.begin():
        yield session
