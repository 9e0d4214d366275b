"""Where a verified webhook is recorded: one writer interface, two group-commit backends.

Both store each incoming event with others that arrived meanwhile, in one statement, and
settle its future once that statement has committed (then log the batch and ring for its
rows: ingress/batch_log.py):

- ingress/postgres_writer.py, Postgres through psycopg: driven by the event loop itself,
  over a few connections, no threads;
- ingress/writer.py, SQLite (and any other driver): on writer threads, one for SQLite's
  single write lock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Protocol

from sqlalchemy import Engine

from ingress.postgres_writer import PostgresGroupWriter
from ingress.writer import GroupCommitWriter
from outbox.store import IncomingEvent, Recorded


class EventWriter(Protocol):
    """What the app records webhooks with (created by `make_writer`)."""

    def start(self) -> None:
        """Start writing (the app's lifespan, on the running loop)."""

    async def stop(self) -> None:
        """Store what is waiting, then stop."""

    def submit(self, event: IncomingEvent) -> asyncio.Future[Recorded]:
        """Queue one event; the future is settled once it committed (or with
        DatabaseUnavailable: nothing of it was stored, or whether it was is unknown)."""
        ...

    async def store(self, event: IncomingEvent) -> Recorded:
        """`submit`, awaited."""
        ...


def make_writer(
    engine: Engine,
    on_committed: Callable[[Sequence[int]], None],
    writers: int,
    timeout: float | None = None,
) -> EventWriter:
    """Postgres through psycopg is written from the event loop; anything else from threads.
    `on_committed` is told the ids worth a ring after each commit; `timeout` is the
    database call timeout (DATABASE_TIMEOUT_SECONDS), if any."""
    if engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg":
        return PostgresGroupWriter(engine, on_committed, connections=writers, timeout=timeout)
    return GroupCommitWriter(engine, on_committed, writers=writers, timeout=timeout)
