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
- a database that cannot be reached, or that was never migrated, raises DatabaseError
  (outbox/driver/errors.py).

`connect` opens a connection with the timeouts the engine gives its own (outbox/db.py);
`of_session` runs the same statements inside a SQLAlchemy session's transaction, for the
commands that also write. Statements on a session's connection for the storage
operations and a batch's reads and writes are outbox/driver/statements.py's and
outbox/driver/batch_writes.py's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from outbox.driver.errors import translated_errors

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

SQLITE_BUSY_TIMEOUT_MS = 30_000  #: milliseconds a writer waits for SQLite's single write lock

Dialect = Literal["sqlite", "postgresql"]

#: How SQLAlchemy writes a time in a SQLite column (outbox/db.py UTCDateTime): UTC, naive.
SQLITE_TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"

_ANY = re.compile(r"([\w.]+) = ANY\(:(\w+)\)")
_NAMED = re.compile(r"(?<![:\w]):(\w+)")


class Connection:
    """A DBAPI connection and its dialect: runs statements, hands back rows as dicts."""

    def __init__(self, dbapi: Any, dialect: Dialect) -> None:
        self.dbapi = dbapi
        self.dialect = dialect
        #: What a command learnt of the database once and reads again (outbox/read_layout.py).
        self.memo: dict[str, Any] = {}

    def rows(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        """Every row of `sql` run with `params`."""
        text, bound = self._prepared(sql, params)
        with translated_errors():
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
    with translated_errors():
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
