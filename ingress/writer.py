"""Group commit on threads: concurrent requests share one INSERT and one COMMIT.

The writer for SQLite (one thread, for its single write lock) and for any driver that the
loop-driven Postgres writer (ingress/postgres_writer.py) does not cover. A writer thread
takes whatever has queued up while the previous commit ran, stores it in one statement,
commits, and only then resolves each request's future. Under load the batches grow by
themselves; alone, a request waits for its own single-row commit.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from ingress.batch_log import after_commit
from ingress.errors import DatabaseUnavailable
from outbox import store
from outbox.db import utcnow
from outbox.store import IncomingEvent, Recorded

log = logging.getLogger("outbox.ingress.writer")

MAX_BATCH = 256  #: requests stored in one transaction at most


@dataclass
class _Request:
    event: IncomingEvent
    future: asyncio.Future[Recorded]
    loop: asyncio.AbstractEventLoop


_STOP = object()


class GroupCommitWriter:
    """Stores incoming events in batches on one thread; `store()` returns once committed.

    :param engine: where the rows go.
    :param on_committed: called (on the writer thread, after each commit) with the ids
        the processors should look at: new pending rows, and duplicates not yet done.
    :param writers: threads committing batches side by side. Postgres overlaps their
        commits; SQLite has one write lock, so one writer is all it can use.
    :param timeout: the database call timeout (DATABASE_TIMEOUT_SECONDS). On SQLite it is
        how long a batch waits for the write lock (busy_timeout) before it fails and its
        connection is replaced; elsewhere the engine's own deadlines apply.
    """

    def __init__(
        self,
        engine: Engine,
        on_committed: Callable[[Sequence[int]], None],
        writers: int = 1,
        timeout: float | None = None,
    ) -> None:
        self._engine = engine
        self._timeout = timeout
        self._on_committed = on_committed
        self._writers = 1 if engine.dialect.name == "sqlite" else max(1, writers)
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        while len(self._threads) < self._writers:
            name = f"outbox-writer-{len(self._threads)}"
            thread = threading.Thread(target=self._run, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    async def stop(self) -> None:
        """Store what is queued, then end the threads (waited for off the loop)."""
        await asyncio.to_thread(self._stop_threads)

    def _stop_threads(self) -> None:
        for _ in self._threads:
            self._queue.put(_STOP)
        for thread in self._threads:
            thread.join(timeout=30)
        self._threads = []

    async def store(self, event: IncomingEvent) -> Recorded:
        """Store one event; returns after its transaction committed. Raises DatabaseUnavailable."""
        return await self.submit(event)

    def submit(self, event: IncomingEvent) -> asyncio.Future[Recorded]:
        """Queue one event; the future is settled after its commit (or DatabaseUnavailable)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Recorded] = loop.create_future()
        self._queue.put(_Request(event, future, loop))
        return future

    def _connect(self, conn: Connection | None) -> Connection:
        if conn is not None and not conn.closed:
            return conn
        conn = self._engine.connect()
        if self._timeout is not None and conn.dialect.name == "sqlite":
            # The engine's 30 s suits workers; a webhook's batch gives up on the write lock
            # in time for its 503 to be inside the webhook deadline.
            # On the driver's connection: SQLAlchemy's would begin a transaction.
            driver: Any = conn.connection.driver_connection
            driver.execute(f"PRAGMA busy_timeout={round(self._timeout * 1000)}")
        return conn

    def _run(self) -> None:
        # Each writer keeps its own connection: no pool checkout and no liveness ping per
        # batch; a broken connection is dropped and the next batch opens a fresh one.
        conn: Connection | None = None
        try:
            while True:
                batch, stop = self._next_batch()
                if batch:
                    conn = self._write(conn, batch)
                if stop:
                    return
        finally:
            # Not back to the pool: its busy_timeout is the writer's own.
            _discard(conn)

    def _next_batch(self) -> tuple[list[_Request], bool]:
        first = self._queue.get()
        if first is _STOP:
            return [], True
        batch = [first]
        while len(batch) < MAX_BATCH:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return [b for b in batch if isinstance(b, _Request)], True
            batch.append(item)
        return [b for b in batch if isinstance(b, _Request)], False

    def _write(self, conn: Connection | None, batch: list[_Request]) -> Connection | None:
        """Store and answer one batch; returns the connection to use next (None: reconnect)."""
        events = [r.event for r in batch]
        started = time.perf_counter()
        try:
            conn = self._connect(conn)
            results = self._commit(conn, events)
        except (OperationalError, DatabaseUnavailable) as exc:
            self._fail_all(batch, exc)
            _discard(conn)
            return None
        except DBAPIError as exc:
            if exc.connection_invalidated:
                self._fail_all(batch, exc)
                _discard(conn)
                return None
            return self._write_one_by_one(conn, batch, exc)
        except Exception as exc:  # a row the driver cannot send: not the database's fault
            return self._write_one_by_one(conn, batch, exc)
        self._committed(batch, events, results, started)
        return conn

    def _write_one_by_one(
        self, conn: Connection | None, batch: list[_Request], exc: BaseException
    ) -> Connection | None:
        # One bad row must not fail its neighbours: store them one by one.
        log.warning("batch insert failed, retrying one by one", extra={"error": type(exc).__name__})
        if len(batch) == 1:
            self._fail_all(batch, exc)
            _discard(conn)
            return None
        for request in batch:
            conn = self._write_one(conn, request)
        return conn

    def _write_one(self, conn: Connection | None, request: _Request) -> Connection | None:
        started = time.perf_counter()
        try:
            conn = self._connect(conn)
            [result] = self._commit(conn, [request.event])
        except Exception as exc:
            self._fail_all([request], exc)
            _discard(conn)
            return None
        self._committed([request], [request.event], [result], started)
        return conn

    @staticmethod
    def _commit(conn: Connection, events: list[IncomingEvent]) -> list[Recorded]:
        with conn.begin():
            return store.record(conn, events, utcnow())

    def _fail_all(self, batch: list[_Request], exc: BaseException) -> None:
        log.error(
            "could not store events", extra={"error": type(exc).__name__, "count": len(batch)}
        )
        _settle(batch, [DatabaseUnavailable("database unavailable, try again later")] * len(batch))

    def _committed(
        self,
        batch: list[_Request],
        events: list[IncomingEvent],
        results: list[Recorded],
        started: float,
    ) -> None:
        """Answer a committed batch, log it, and ring for its rows."""
        _settle(batch, results)
        after_commit(events, results, started, self._on_committed)


def _discard(conn: Connection | None) -> None:
    if conn is not None:
        try:
            conn.invalidate()
            conn.close()
        except Exception:  # already broken: nothing more to release
            log.debug("closing a broken connection failed", exc_info=True)


def _settle(batch: list[_Request], outcomes: Sequence[Recorded | BaseException]) -> None:
    """Hand each request its result (or error) on its loop: one wake-up per loop and batch.

    A wake-up per request cost the loop a pipe write and a callback each; the batch
    finished together, so it is answered together.
    """
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Request, Recorded | BaseException]]] = {}
    for request, outcome in zip(batch, outcomes, strict=True):
        by_loop.setdefault(request.loop, []).append((request, outcome))
    for loop, settled in by_loop.items():
        loop.call_soon_threadsafe(_set_outcomes, settled)


def _set_outcomes(settled: list[tuple[_Request, Recorded | BaseException]]) -> None:
    for request, outcome in settled:
        if request.future.done():  # the request was given up on (client gone)
            continue
        if isinstance(outcome, BaseException):
            request.future.set_exception(outcome)
        else:
            request.future.set_result(outcome)
