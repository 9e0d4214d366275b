"""Statements sent on a SQLAlchemy session's own psycopg connection, inside its transaction:
prepared on the server, with constants written into the SQL, and psycopg's errors raised
as SQLAlchemy's.

A statement sent through SQLAlchemy's execute path costs ~150 µs of Python, more than
Postgres spends on the statements of a batch of events; sent here it costs psycopg's own.
Only the driver layer uses this module: outbox/driver/statements.py's `Query` runs a
statement here on Postgres and through the session on SQLite, and
outbox/driver/batch_writes.py's `insert_all`/`update_all` send their one statement here.
psycopg's errors become SQLAlchemy's by outbox/driver/errors.py.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

from outbox.driver.errors import as_sqlalchemy_error

if TYPE_CHECKING:
    from sqlalchemy import Connection
    from sqlalchemy.engine import Dialect


class SessionDriver:
    """Statements sent straight on a SQLAlchemy connection's psycopg connection, prepared
    on the server, whose errors are SQLAlchemy's as if it had sent them: wrapped (an
    OperationalError, an IntegrityError, ...), and a lost server invalidating the
    connection, so callers handle a database gone the way they always did."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._driver: Any = connection.connection.driver_connection
        self.dialect = connection.dialect

    def execute(self, sql: str, params: Any) -> Any:
        """psycopg's `execute`, prepared: a cursor holding the whole result."""
        try:
            return self._driver.execute(sql, params, prepare=True)
        except self.dialect.loaded_dbapi.Error as exc:
            raise as_sqlalchemy_error(self._connection, self._driver, exc, sql, params) from exc


class CompiledStatement:
    """A Core statement compiled once for a dialect: the names of the parameters it takes
    (`named`) and, on Postgres, psycopg's SQL text of it, run prepared. Its constants (a
    status compared with, a list of statuses, a number added) are written into the text as
    literals: the planner must see `status = 'pending'` to use a partial index, also in the
    generic plan of a prepared statement. Its other parameters are `bindparam(name)`s,
    given by name at each call.

    Rows come back as psycopg's tuples, without SQLAlchemy's result processing: a time is
    in the session's time zone (outbox.driver.dbapi.utc reads it), JSON is parsed by psycopg.
    """

    def __init__(self, statement: Any, dialect: Dialect) -> None:
        self.statement = statement
        if dialect.name == "postgresql":
            self.sql, self.named = postgres_text(statement, dialect)
        else:
            compiled = statement.compile(dialect=dialect)
            self.sql = ""
            self.named = frozenset(name for name, bind in compiled.binds.items() if bind.required)

    def execute(self, driver: SessionDriver, params: dict[str, Any]) -> Any:
        """psycopg's cursor over the statement's result; `params` are exactly `named`."""
        return driver.execute(self.sql, params)


def postgres_text(statement: Any, dialect: Dialect) -> tuple[str, frozenset[str]]:
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
