"""Engine and session: the one place that knows how to talk to Postgres or SQLite."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Engine, create_engine, event
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from outbox.driver.dbapi import SQLITE_BUSY_TIMEOUT_MS, utc

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


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: Callable[[], Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error."""
    with factory() as session, session.begin():
        yield session
