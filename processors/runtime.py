"""What the actors of one process share: settings, database sessions, retry policy, handlers.

An actor runs inside a Dramatiq worker thread and receives only ids, so it finds the rest
here. `current()` builds the runtime from the environment on first use (in each worker
process, after Dramatiq forked it); `outbox dev` and tests call `configure()` with their
own settings first.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property

from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

from outbox.db import make_engine, make_sessionmaker
from outbox.dispatch import load_handler_table
from outbox.registry import DispatchTable
from outbox.retry import RetryPolicy
from outbox.settings import Settings, get_settings


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    owns_engine: bool = False
    sessions: sessionmaker[Session] = field(init=False)

    def __post_init__(self) -> None:
        self.sessions = make_sessionmaker(self.engine)

    @cached_property
    def policy(self) -> RetryPolicy:
        return RetryPolicy.from_settings(self.settings)

    @cached_property
    def handlers(self) -> DispatchTable:
        return load_handler_table(self.settings)

    @contextmanager
    def one_connection(self) -> Iterator[Callable[[], Session]]:
        """Sessions that share one pooled connection, checked out (and pinged) once: the
        claim and apply transactions of one pass, one after the other. A connection the
        database dropped is replaced for the next session, so a restarted Postgres costs
        the pass the transaction it was in, not every one after it."""
        connections = _PassConnection(self.engine)
        try:
            yield connections.session
        finally:
            connections.close()

    def close(self) -> None:
        if self.owns_engine:
            self.engine.dispose()


class _PassConnection:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._connection: Connection | None = None

    def session(self) -> Session:
        if self._connection is None or self._connection.invalidated or self._connection.closed:
            self.close()
            self._connection = self._engine.connect()
        return Session(bind=self._connection, expire_on_commit=False)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


_lock = threading.Lock()
_current: Runtime | None = None


def configure(settings: Settings, *, engine: Engine | None = None) -> Runtime:
    """Make `settings` (and `engine`, else a new one) what this process's actors use."""
    with _lock:
        return _replace(settings, engine)


def current() -> Runtime:
    """This process's runtime, built from the environment when nothing configured one."""
    with _lock:
        return _current or _replace(get_settings(), None)


def _replace(settings: Settings, engine: Engine | None) -> Runtime:
    global _current
    if _current is not None:
        _current.close()
    _current = Runtime(
        settings,
        engine or make_engine(settings.database_url, timeout=settings.database_timeout_seconds),
        owns_engine=engine is None,
    )
    return _current
