"""Group commit on Postgres, driven by the event loop itself: no writer threads.

Requests wait in a list; each of a few connections takes everything waiting, stores it
with one INSERT that is its own transaction, and settles the requests' futures once
that statement, and so its commit, has returned. Under load the batches grow by
themselves; alone, a request waits for its own single-row commit.

Why on the loop: the ingress's work is Python, and Python runs one thread at a time.
Writer threads made the loop and the writers hand the interpreter back and forth on
every body hashed and every packet sent; on the loop, a batch costs its own CPU only.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from sqlalchemy import Engine

from ingress.batch_log import after_commit
from ingress.errors import DatabaseUnavailable
from outbox import store
from outbox.db import POSTGRES_CONNECT_TIMEOUT, utcnow
from outbox.deadlines import (
    DatabaseCallTimedOut,
    call_deadline,
    postgres_connect_params,
    shut_down,
    stalled,
)
from outbox.store import IncomingEvent, Recorded

log = logging.getLogger("outbox.ingress.writer")

MAX_BATCH = 256  #: requests stored in one statement at most
#: requests waiting before another connection starts a batch while one is in flight.
#: A batch costs ~0.2-0.3 ms of the loop's CPU whatever its size, so single requests side
#: by side spent the CPU the requests needed. Against 4, six paired 5 s runs of wrk at 16
#: connections (2 cores, AMD EPYC) gave 7.0 rows a batch instead of 5.7 and +1 to +13 %
#: webhooks a second (median +7.6 %), p99 alike; 8 grew the batches to only ~7.7 while
#: the p99 rose. At 64 connections batches are larger than either.
OVERLAP_MIN = 6


@dataclass
class _Waiting:
    event: IncomingEvent
    future: asyncio.Future[Recorded]


class PostgresGroupWriter:
    """Stores incoming events in batches over `connections` psycopg connections.

    :param engine: the Postgres (psycopg) engine whose database the rows go to; only its
        connection parameters are used.
    :param on_committed: called after each commit with the ids the processors should look
        at: new pending rows, and duplicates not yet done.
    :param connections: batches in flight at once: while one commits, the next gathers.
    :param timeout: the database call timeout (DATABASE_TIMEOUT_SECONDS): the server's
        statement_timeout, and a batch with no answer a little later (`call_deadline`)
        fails, its connection discarded. None: no deadline.
    """

    def __init__(
        self,
        engine: Engine,
        on_committed: Callable[[Sequence[int]], None],
        connections: int = 2,
        timeout: float | None = None,
    ) -> None:
        args, params = engine.dialect.create_connect_args(engine.url)
        self._connect_args: tuple[Any, ...] = tuple(args)
        bounds = postgres_connect_params(timeout) if timeout is not None else {}
        self._connect_params: dict[str, Any] = {
            "connect_timeout": POSTGRES_CONNECT_TIMEOUT,
            **bounds,
            **params,
        }
        self._deadline = call_deadline(timeout) if timeout is not None else None
        self._on_committed = on_committed
        self._connections = max(1, connections)
        self._waiting: list[_Waiting] = []
        #: One future per connection task waiting for a batch; the first is woken once a
        #: batch may be taken. One task, not all: an Event woke every idle task at each
        #: request submitted while a batch was in flight, and each went back to sleep.
        self._idle: deque[asyncio.Future[None]] = deque()
        self._woken = 0  #: tasks woken that have not run yet: they take what waits
        self._started = False
        self._stopping = False
        self._busy = 0
        self._tasks: list[asyncio.Task[None]] = []
        #: Calls that missed their deadline so far, and, for each open connection, how many
        #: had when it was opened (see `_connect`).
        self._missed = 0
        self._opened_after: weakref.WeakKeyDictionary[psycopg.AsyncConnection[Any], int] = (
            weakref.WeakKeyDictionary()
        )

    def start(self) -> None:
        """Start the connection tasks on the running loop (the app's lifespan)."""
        self._idle.clear()
        self._woken = 0
        self._started = True
        self._stopping = False
        self._tasks = [
            asyncio.get_running_loop().create_task(self._run(), name=f"outbox-writer-{n}")
            for n in range(self._connections)
        ]

    async def stop(self) -> None:
        """Store what is waiting, then close the connections."""
        self._stopping = True
        while self._idle:  # each task stores what waits, or ends
            self._wake_one()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def store(self, event: IncomingEvent) -> Recorded:
        """Store one event; returns after its commit. Raises DatabaseUnavailable."""
        return await self.submit(event)

    def submit(self, event: IncomingEvent) -> asyncio.Future[Recorded]:
        """Queue one event; the future is settled after its commit (or DatabaseUnavailable)."""
        future: asyncio.Future[Recorded] = asyncio.get_running_loop().create_future()
        if not self._started or self._stopping:
            future.set_exception(DatabaseUnavailable("the ingress is not accepting events"))
            return future
        self._waiting.append(_Waiting(event, future))
        self._wake_if_due()
        return future

    async def _run(self) -> None:
        # Each task keeps its own connection: a broken one is dropped and the next batch
        # opens a fresh one.
        conn: psycopg.AsyncConnection[Any] | None = None
        try:
            while True:
                batch = await self._next_batch()
                if not batch:
                    return
                try:
                    conn = await self._write(conn, batch)
                finally:
                    self._busy -= 1
        finally:
            if conn is not None:
                await conn.close()

    async def _next_batch(self) -> list[_Waiting]:
        """The next batch to store, counted busy until its task is done with it ([]: stop)."""
        while not self._may_take():
            if self._stopping and not self._waiting:
                return []
            idle = asyncio.get_running_loop().create_future()
            self._idle.append(idle)
            try:
                await idle
            finally:
                if idle.done() and not idle.cancelled():
                    self._woken -= 1
        batch = self._waiting[:MAX_BATCH]
        del self._waiting[:MAX_BATCH]
        self._busy += 1
        self._wake_if_due()  # another batch's worth may wait
        return batch

    def _wake_if_due(self) -> None:
        """Wake an idle task if a batch may be taken and no task woken is on its way to it."""
        if self._idle and not self._woken and self._may_take():
            self._wake_one()

    def _wake_one(self) -> None:
        while self._idle:
            idle = self._idle.popleft()
            if not idle.done():  # else its task was cancelled
                idle.set_result(None)
                self._woken += 1
                return

    def _may_take(self) -> bool:
        if not self._waiting:
            return False
        return self._busy == 0 or self._stopping or len(self._waiting) >= OVERLAP_MIN

    async def _connect(
        self, conn: psycopg.AsyncConnection[Any] | None
    ) -> psycopg.AsyncConnection[Any]:
        if conn is not None and not conn.closed:
            if self._opened_after.get(conn) == self._missed:
                return conn
            # A call on another connection missed its deadline since this one was opened:
            # what froze that one (a failover leaving the old connections half-open) most
            # likely holds this one too, and using it would cost another deadline.
            await _discard(conn)
        # Autocommit: the batch's INSERT is its own transaction. The server commits it
        # (synchronous_commit: WAL flushed) before it reports ready for the next query,
        # and execute() returns only after that report. One round trip per batch where
        # BEGIN, INSERT, COMMIT took three.
        fresh = await psycopg.AsyncConnection.connect(
            *self._connect_args, **self._connect_params, autocommit=True
        )
        self._opened_after[fresh] = self._missed
        return fresh

    async def _record(
        self, conn: psycopg.AsyncConnection[Any], events: list[IncomingEvent]
    ) -> list[Recorded]:
        """Store `events` within the call deadline (connecting is bounded by connect_timeout).
        Past it the connection is discarded (its socket shut down first) and
        DatabaseCallTimedOut raised: whether the batch committed is unknown, so its
        webhooks are answered 503."""
        try:
            async with asyncio.timeout(self._deadline):
                return await store.record_async(conn, events, utcnow())
        except TimeoutError:
            assert self._deadline is not None
            stalled("postgres", self._deadline)
            self._missed += 1
            if not conn.closed:
                shut_down(conn.pgconn.socket)
            await _discard(conn)
            raise DatabaseCallTimedOut(
                f"no answer from the database within {self._deadline:g} s"
            ) from None

    async def _write(
        self, conn: psycopg.AsyncConnection[Any] | None, batch: list[_Waiting]
    ) -> psycopg.AsyncConnection[Any] | None:
        """Store and answer one batch; returns the connection to use next (None: reconnect)."""
        events = [w.event for w in batch]
        started = time.perf_counter()
        try:
            conn = await self._connect(conn)
            results = await self._record(conn, events)
        except psycopg.OperationalError as exc:  # the server is down or the link broke
            _fail_all(batch, exc)
            await _discard(conn)
            return None
        except Exception as exc:  # a row the server or driver refuses
            if conn is None or conn.broken:
                _fail_all(batch, exc)
                await _discard(conn)
                return None
            return await self._write_one_by_one(conn, batch, exc)
        self._committed(batch, events, results, started)
        return conn

    async def _write_one_by_one(
        self, conn: psycopg.AsyncConnection[Any], batch: list[_Waiting], exc: BaseException
    ) -> psycopg.AsyncConnection[Any] | None:
        # One bad row must not fail its neighbours: store them one by one.
        log.warning("batch insert failed, retrying one by one", extra={"error": type(exc).__name__})
        if len(batch) == 1:
            _fail_all(batch, exc)
            return conn
        next_conn: psycopg.AsyncConnection[Any] | None = conn
        for waiting in batch:
            next_conn = await self._write_one(next_conn, waiting)
        return next_conn

    async def _write_one(
        self, conn: psycopg.AsyncConnection[Any] | None, waiting: _Waiting
    ) -> psycopg.AsyncConnection[Any] | None:
        started = time.perf_counter()
        try:
            conn = await self._connect(conn)
            results = await self._record(conn, [waiting.event])
        except Exception as exc:
            _fail_all([waiting], exc)
            if conn is None or conn.broken:
                await _discard(conn)
                return None
            return conn
        self._committed([waiting], [waiting.event], results, started)
        return conn

    def _committed(
        self,
        batch: list[_Waiting],
        events: list[IncomingEvent],
        results: list[Recorded],
        started: float,
    ) -> None:
        """Answer a committed batch, log it, and ring for its rows."""
        for waiting, result in zip(batch, results, strict=True):
            if not waiting.future.done():
                waiting.future.set_result(result)
        after_commit(events, results, started, self._on_committed)


def _fail_all(batch: list[_Waiting], exc: BaseException) -> None:
    log.error("could not store events", extra={"error": type(exc).__name__, "count": len(batch)})
    for waiting in batch:
        if not waiting.future.done():
            waiting.future.set_exception(
                DatabaseUnavailable("database unavailable, try again later")
            )


async def _discard(conn: psycopg.AsyncConnection[Any] | None) -> None:
    if conn is not None:
        try:
            await conn.close()
        except Exception:  # already broken: nothing more to release
            log.debug("closing a broken connection failed", exc_info=True)
