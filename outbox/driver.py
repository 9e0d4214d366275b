"""Plain DBAPI connections for the named reads (outbox/queries.py): the standard library's
sqlite3 on SQLite, psycopg on Postgres, and nothing of SQLAlchemy.

A listing must start in a fraction of a second, and importing SQLAlchemy alone takes about
a quarter of one. So the reads are SQL text run on the driver's own connection, with one
execution style per dialect:

- a statement is written once, with `:name` parameters and Postgres's `column = ANY(:list)`
  for a list; on SQLite the list becomes `column IN (SELECT value FROM json_each(:list))`,
  one parameter either way, whatever the list's length;
- a time parameter is an aware datetime; on SQLite it is written as SQLAlchemy stores
  times there (UTC, `YYYY-MM-DD HH:MM:SS.ffffff`), so text comparisons order it right;
- a row comes back as a dict; `utc`, `flag` and `document` read a time, a boolean and a
  JSON column alike from either driver;
- a database that cannot be reached, or that was never migrated, raises DatabaseError.

`connect` opens a connection with the timeouts the engine gives its own (outbox/db.py);
`of_session` runs the same statements inside a SQLAlchemy session's transaction, for the
commands that also write.

The storage operations (outbox/claiming.py, finishing.py, recovery.py, operator_writes.py)
and the per-batch statements of the domain go through a session's own psycopg connection
on Postgres (`Statement`, `ListQuery`): prepared statements,
lists as one array parameter, many rows in one statement, psycopg's errors raised as
SQLAlchemy's. Only they import SQLAlchemy, inside the functions that need it.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from sqlalchemy import ColumnElement
    from sqlalchemy import Connection as SAConnection
    from sqlalchemy.engine import Dialect as SADialect
    from sqlalchemy.orm import Session

SQLITE_BUSY_TIMEOUT_MS = 30_000  #: milliseconds a writer waits for SQLite's single write lock

Dialect = Literal["sqlite", "postgresql"]

#: How SQLAlchemy writes a time in a SQLite column (outbox/db.py UTCDateTime): UTC, naive.
SQLITE_TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"

_ANY = re.compile(r"([\w.]+) = ANY\(:(\w+)\)")
_NAMED = re.compile(r"(?<![:\w]):(\w+)")


class DatabaseError(Exception):
    """The database cannot answer: unreachable, locked past the busy timeout, out of space,
    or without the tables (never migrated). `reason` is the driver's first line."""

    def __init__(self, reason: str, sqlstate: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.sqlstate = sqlstate


class Connection:
    """A DBAPI connection and its dialect: runs statements, hands back rows as dicts."""

    def __init__(self, dbapi: Any, dialect: Dialect) -> None:
        self.dbapi = dbapi
        self.dialect = dialect

    def rows(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        """Every row of `sql` run with `params`."""
        text, bound = self._prepared(sql, params)
        with _translated_errors():
            cursor = self.dbapi.cursor()
            try:
                cursor.execute(text, bound)
                names = [column[0] for column in cursor.description]
                return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
            finally:
                cursor.close()

    def first(self, sql: str, **params: Any) -> dict[str, Any] | None:
        """The first row of `sql`, or None."""
        found = self.rows(sql, **params)
        return found[0] if found else None

    def value(self, sql: str, **params: Any) -> Any:
        """The first column of the first row of `sql`, or None."""
        row = self.first(sql, **params)
        return next(iter(row.values())) if row else None

    def _prepared(self, sql: str, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        if self.dialect == "sqlite":
            return _sqlite_text(sql), {k: _sqlite_value(v) for k, v in params.items()}
        return _postgres_text(sql), {k: _postgres_value(v) for k, v in params.items()}


_TEXTS: dict[tuple[str, str], str] = {}


def _sqlite_text(sql: str) -> str:
    text = _TEXTS.get(("sqlite", sql))
    if text is None:
        text = _TEXTS["sqlite", sql] = _ANY.sub(r"\1 IN (SELECT value FROM json_each(:\2))", sql)
    return text


def _postgres_text(sql: str) -> str:
    text = _TEXTS.get(("postgresql", sql))
    if text is None:
        text = _TEXTS["postgresql", sql] = _NAMED.sub(r"%(\1)s", sql.replace("%", "%%"))
    return text


def _sqlite_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return _aware(value).astimezone(UTC).strftime(SQLITE_TIME_FORMAT)
    if isinstance(value, list | tuple | set | frozenset):
        return json.dumps(list(value))
    return value


def _postgres_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return _aware(value)
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    return value


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("naive datetime given as a UTC time")
    return value


def utc(value: Any) -> datetime | None:
    """A time column as an aware UTC datetime: SQLite hands back text, psycopg a datetime
    in the session's time zone."""
    if value is None:
        return None
    moment: datetime = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def flag(value: Any) -> bool | None:
    """A boolean column: SQLite keeps 0 and 1."""
    return None if value is None else bool(value)


def document(value: Any) -> Any:
    """A JSON column: SQLite keeps its text, psycopg has parsed it already."""
    return json.loads(value) if isinstance(value, str | bytes) else value


@contextmanager
def connect(url: str, *, timeout: float) -> Iterator[Connection]:
    """A connection to the database at `url` (a SQLAlchemy URL), closed at the end.

    :param timeout: seconds one call may take on Postgres (DATABASE_TIMEOUT_SECONDS), as
        the engine bounds its own; SQLite waits SQLITE_BUSY_TIMEOUT_MS for a writer's lock.
    """
    with _translated_errors():
        if url.startswith("sqlite"):
            connection = Connection(_sqlite_connection(url), "sqlite")
        elif url.startswith("postgresql"):
            connection = Connection(_postgres_connection(url, timeout), "postgresql")
        else:
            raise ValueError(f"DATABASE_URL must be a sqlite or postgresql URL, not {url!r}")
    try:
        yield connection
    finally:
        connection.dbapi.close()


def of_session(session: Session) -> Connection:
    """The DBAPI connection under a SQLAlchemy session, in the session's transaction (which
    the session commits or rolls back): the reads of a command that also writes."""
    dialect = session.get_bind().dialect.name
    if dialect not in ("sqlite", "postgresql"):
        raise ValueError(f"no driver for the {dialect} dialect")
    return Connection(session.connection().connection.driver_connection, dialect)  # type: ignore[arg-type]


def sqlite_database(url: str) -> tuple[str, bool]:
    """The file (or `:memory:`) a SQLAlchemy SQLite URL names, and whether it is a URI
    (`sqlite:///file:x.db?mode=ro&uri=true`, SQLAlchemy's form for SQLite's URI options)."""
    rest = url.partition("://")[2]
    path, _, query = rest.partition("?")
    path = path[1:] if path.startswith("/") else path
    options = [part for part in query.split("&") if part]
    if any(part.lower() in ("uri=true", "uri=1") for part in options):
        rest = "&".join(p for p in options if not p.lower().startswith("uri="))
        return path + (f"?{rest}" if rest else ""), True
    return path or ":memory:", False


def _sqlite_connection(url: str) -> Any:
    import sqlite3

    database, uri = sqlite_database(url)
    # Autocommit: each read sees what is committed when it runs, and holds no lock after.
    connection = sqlite3.connect(
        database, uri=uri, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000, isolation_level=None
    )
    connection.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    return connection


def _postgres_connection(url: str, timeout: float) -> Any:
    # The engine's own connection (outbox/db.py): the same connect, statement and idle
    # timeouts, keepalives, and a deadline on every exchange with the server.
    from outbox.deadlines import DeadlineConnection, call_deadline, postgres_connect_params

    conninfo = "postgresql://" + url.partition("://")[2]  # drop SQLAlchemy's "+psycopg"
    # Autocommit: a read holds no transaction open between two polls of a tail.
    connection = DeadlineConnection.connect(
        conninfo, autocommit=True, **postgres_connect_params(timeout)
    )
    connection.deadline = call_deadline(timeout)
    return connection


@contextmanager
def _translated_errors() -> Iterator[None]:
    """The drivers' errors about the database itself, as DatabaseError; others unchanged."""
    try:
        yield
    except Exception as exc:
        translated = _database_error(exc)
        if translated is None:
            raise
        raise translated from exc


def _database_error(exc: Exception) -> DatabaseError | None:
    # The drivers are looked up, not imported: a command on SQLite never loads psycopg.
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    sqlite3 = sys.modules.get("sqlite3")
    if sqlite3 is not None and isinstance(exc, sqlite3.OperationalError):
        return DatabaseError(reason)
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None and isinstance(
        exc, psycopg.OperationalError | psycopg.errors.UndefinedTable
    ):
        return DatabaseError(reason, getattr(exc, "sqlstate", None))
    return None


# --- statements on a session's psycopg connection ----------------------------------------------


def postgres_driver(session: Session) -> SessionDriver | None:
    """The psycopg connection under the session's transaction (which the session commits or
    rolls back), or None off Postgres. A statement sent through SQLAlchemy's execute path
    costs ~150 µs of Python, more than Postgres spends on the statements of a batch."""
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        return None
    return SessionDriver(connection)


class SessionDriver:
    """Statements sent straight on a SQLAlchemy connection's psycopg connection, prepared
    on the server, whose errors are SQLAlchemy's as if it had sent them: wrapped (an
    OperationalError, an IntegrityError, ...), and a lost server invalidating the
    connection, so callers handle a database gone the way they always did."""

    def __init__(self, connection: SAConnection) -> None:
        self._connection = connection
        self._driver: Any = connection.connection.driver_connection
        self.dialect = connection.dialect

    def execute(self, sql: str, params: Any) -> Any:
        """psycopg's `execute`, prepared: a cursor holding the whole result."""
        try:
            return self._driver.execute(sql, params, prepare=True)
        except self.dialect.loaded_dbapi.Error as exc:
            raise self._as_sqlalchemy_error(exc, sql, params) from exc

    def _as_sqlalchemy_error(self, exc: Exception, sql: str, params: Any) -> Exception:
        from sqlalchemy.exc import DBAPIError

        lost = self.dialect.is_disconnect(exc, self._driver, None)  # type: ignore[arg-type]
        if lost:
            self._connection.invalidate(exc)
        base = self.dialect.loaded_dbapi.Error
        return DBAPIError.instance(
            sql, params, exc, base, connection_invalidated=lost, dialect=self.dialect
        )


class Statement:
    """A Core statement run on either database, one way per dialect: on Postgres as
    psycopg's own on the session's connection (compiled once to SQL text, prepared), on
    SQLite through the session. Its constants (a status compared with, a list of
    statuses, a number added) are written into the Postgres text as literals: the planner
    must see `status = 'pending'` to use a partial index, also in the generic plan of a
    prepared statement. Its other parameters are `bindparam(name)`s given at each call.

    Rows come back as tuples; on Postgres without SQLAlchemy's result processing, so a
    time is in the session's time zone (`utc` reads it) and JSON is parsed by psycopg.
    """

    def __init__(self, statement: Any) -> None:
        self.statement = statement
        self._sql = ""
        self._named: frozenset[str] = frozenset()

    def rows(self, session: Session, **params: Any) -> list[tuple[Any, ...]]:
        """Every row the statement returns."""
        driver = postgres_driver(session)
        if driver is None:
            return [tuple(row) for row in session.execute(self.statement, params)]
        return self.execute(driver, params).fetchall()  # type: ignore[no-any-return]

    def count(self, session: Session, **params: Any) -> int:
        """The number of rows the statement changed."""
        driver = postgres_driver(session)
        if driver is None:
            return session.execute(self.statement, params).rowcount  # type: ignore[attr-defined,no-any-return]
        return self.execute(driver, params).rowcount  # type: ignore[no-any-return]

    def execute(self, driver: SessionDriver, params: dict[str, Any]) -> Any:
        """psycopg's cursor over the statement's result; `params` are exactly its names."""
        if not self._sql:
            self._sql, self._named = postgres_text(self.statement, driver.dialect)
        if set(params) != self._named:
            raise TypeError(f"the statement needs exactly the parameters {sorted(self._named)}")
        return driver.execute(self._sql, params)


def postgres_text(statement: Any, dialect: SADialect) -> tuple[str, frozenset[str]]:
    """The statement's psycopg text with its constants written in, and the names of the
    parameters it takes: each `bindparam` without a value stays a `%(name)s` placeholder,
    everything else is rendered by SQLAlchemy's `literal_binds`."""
    _keep_required_binds()
    compiled = statement.compile(
        dialect=dialect, compile_kwargs={"literal_binds": True, _KEEP_REQUIRED: True}
    )
    named = frozenset(name for name, bind in compiled.binds.items() if bind.required)
    return str(compiled), named


_KEEP_REQUIRED = "outbox_keep_required_binds"


@cache
def _keep_required_binds() -> None:
    """Under the compile option _KEEP_REQUIRED, a bind parameter without a value is compiled
    as a parameter even where `literal_binds` writes the others out (SQLAlchemy would write
    NULL). Registered once, at the first statement compiled for the driver."""
    from sqlalchemy import BindParameter
    from sqlalchemy.ext.compiler import compiles

    @compiles(BindParameter)
    def _bind(element: Any, compiler: Any, **kw: Any) -> str:
        if kw.pop(_KEEP_REQUIRED, False) and element.required:
            kw["literal_binds"] = False
        return compiler.visit_bindparam(element, **kw)  # type: ignore[no-any-return]


class ListQuery:
    """A statement with one list parameter, `values`, built once per database dialect.

    `build(one_of)` makes the statement; `one_of(column)` stands for `column IN values`.
    On Postgres that is `= ANY(array)`, one parameter: an IN list of N parameters is
    another statement text for every N, which the driver parses anew each time and the
    server plans anew. SQLite has no arrays, so there it is an expanding IN.

        _FIND = ListQuery(lambda one_of: select(T.c.id).where(one_of(T.c.key)))
        session.scalars(_FIND.on(session), {"values": keys})
        _FIND.rows(session, keys)  # plain tuples, through `Statement`
    """

    def __init__(self, build: Callable[[Callable[[Any], ColumnElement[bool]]], Any]) -> None:
        self._build = build
        self._built: dict[str, Statement] = {}

    def rows(self, session: Session, values: Sequence[Any], **params: Any) -> list[tuple[Any, ...]]:
        """The statement's rows as tuples (see `Statement`); `params` are its others."""
        return self._statement(session).rows(session, values=list(values), **params)

    def on(self, session: Session) -> Any:
        """The Core statement for the session's database."""
        return self._statement(session).statement

    def _statement(self, session: Session) -> Statement:
        dialect = session.get_bind().dialect.name
        statement = self._built.get(dialect)
        if statement is None:
            statement = self._built[dialect] = Statement(self._build(_one_of_for(dialect)))
        return statement


def _one_of_for(dialect: str) -> Callable[[Any], ColumnElement[bool]]:
    from outbox.batch_sql import one_of

    return lambda column: one_of(column, "values", dialect)
