"""The database as the operator commands use it: one engine per command, closed at the end."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from outbox.db import make_engine, make_sessionmaker
from outbox.settings import Settings


@contextmanager
def open_database(settings: Settings) -> Iterator[tuple[Engine, sessionmaker[Session]]]:
    """An engine and its session factory for one command; a small pool is plenty for a CLI."""
    engine = make_engine(
        settings.database_url, pool_size=2, timeout=settings.database_timeout_seconds
    )
    try:
        yield engine, make_sessionmaker(engine)
    finally:
        engine.dispose()
