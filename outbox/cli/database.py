"""The database as the operator commands use it, opened for one command and closed at its end.

`open_reads` is a plain driver connection (outbox/driver/dbapi.py): commands that only read
(`events list | stats | tail`) never load SQLAlchemy, nor pydantic for their settings
(outbox/reader_settings.py). `open_database` is an engine and its
sessions, for the commands that write or ask the domain.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session, sessionmaker

    from outbox.driver.dbapi import Connection
    from outbox.reader_settings import ReaderSettings
    from outbox.settings import Settings


@contextmanager
def open_reads(settings: ReaderSettings) -> Iterator[Connection]:
    """A connection for the named reads (outbox/queries.py), with the engine's timeouts."""
    from outbox.driver.dbapi import connect

    with connect(settings.database_url, timeout=settings.database_timeout_seconds) as db:
        yield db


@contextmanager
def open_database(settings: Settings) -> Iterator[tuple[Engine, sessionmaker[Session]]]:
    """An engine and its session factory for one command; a small pool is plenty for a CLI."""
    from outbox.db import make_engine, make_sessionmaker

    engine = make_engine(
        settings.database_url, pool_size=2, timeout=settings.database_timeout_seconds
    )
    try:
        yield engine, make_sessionmaker(engine)
    finally:
        engine.dispose()
