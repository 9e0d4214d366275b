"""How a driver's error reaches the caller, one rule per kind of connection.

On a SQLAlchemy session's own psycopg connection (outbox/driver/prepared.py), psycopg's
error is raised as SQLAlchemy's, as if SQLAlchemy had sent the statement: wrapped (an
OperationalError, an IntegrityError, ...), and a lost server invalidating the connection,
so callers handle a database gone the way they always did. On a plain DBAPI connection
(outbox/driver/dbapi.py), an error about the database itself (unreachable, locked past
the busy timeout, never migrated) is a DatabaseError, others pass unchanged.

Nothing here imports SQLAlchemy or a driver when the module is imported: a command on
SQLite never loads psycopg, and a listing never loads SQLAlchemy.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy import Connection


class DatabaseError(Exception):
    """The database cannot answer: unreachable, locked past the busy timeout, out of space,
    or without the tables (never migrated). `reason` is the driver's first line."""

    def __init__(self, reason: str, sqlstate: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.sqlstate = sqlstate


def as_sqlalchemy_error(
    connection: Connection, driver: Any, exc: Exception, sql: str, params: Any
) -> Exception:
    """psycopg's `exc`, raised by `driver` (the psycopg connection under `connection`)
    running `sql`, as the error SQLAlchemy raises for it; `connection` is invalidated when
    the server is lost.

    Built with public names only, the two SQLAlchemy's own execute path builds its error
    with: the dialect's `is_disconnect` (of its Dialect interface) and `DBAPIError.instance`,
    so the error is the class that path raises (an IntegrityError for a unique violation,
    ...), never through a Connection's private handler."""
    from sqlalchemy.exc import DBAPIError

    dialect = connection.dialect
    lost = dialect.is_disconnect(exc, driver, None)  # type: ignore[arg-type]
    if lost:
        connection.invalidate(exc)
    base = dialect.loaded_dbapi.Error
    return DBAPIError.instance(sql, params, exc, base, connection_invalidated=lost, dialect=dialect)


@contextmanager
def translated_errors() -> Iterator[None]:
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
