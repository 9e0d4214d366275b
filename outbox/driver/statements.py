"""Named statements, run one way per dialect on a session: on Postgres as psycopg's own,
prepared, on the session's connection (outbox/driver/prepared.py), on SQLite through the
session. The storage operations of outbox/ and a batch's reads are these.

`Query(build)` is a named statement, built once per dialect. `build(one_of)` makes it,
where `one_of(column, name)` stands for `column IN :name`, the list given as the one
parameter `name`. On Postgres that is `= ANY(:name)`, one array parameter: an IN list of
N values is N named parameters, which psycopg checks and binds one by one in Python (a
fifth of a 50-checkout batch's worker CPU), and another statement text for every N.
SQLite has no arrays: there it is an expanding IN. `query.rows(session, **params)` runs
it with exactly its parameters and returns plain tuples; on Postgres without
SQLAlchemy's result processing, whose Python on every one of a batch's reads drained the
mix about 8 % slower (bench.compare --part mix).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import ColumnElement, any_, bindparam
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session

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
