"""Group commit: concurrent requests share one INSERT and one COMMIT, and each is answered after it.

One writer thread takes whatever has queued up while the previous commit ran, stores it
in one statement, commits, and only then resolves each request's future. Under load the
batches grow by themselves; alone, a request waits for its own single-row commit.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from ingress.errors import DatabaseUnavailable
from outbox import store
from outbox.db import utcnow
from outbox.models import Status
from outbox.store import IncomingEvent, Recorded

log = logging.getLogger("outbox.ingress.writer")

MAX_BATCH = 256  #: requests stored in one transaction at most
RINGABLE = (Status.PENDING.value, Status.PROCESSING.value)


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
    """

    def __init__(self, engine: Engine, on_committed: Callable[[Sequence[int]], None]) -> None:
        self._engine = engine
        self._on_committed = on_committed
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="outbox-writer", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout=30)
            self._thread = None

    async def store(self, event: IncomingEvent) -> Recorded:
        """Store one event; returns after its transaction committed. Raises DatabaseUnavailable."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Recorded] = loop.create_future()
        self._queue.put(_Request(event, future, loop))
        return await future

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    self._queue.put(_STOP)
                    break
                batch.append(item)
            self._write([b for b in batch if isinstance(b, _Request)])

    def _write(self, batch: list[_Request]) -> None:
        try:
            results = self._commit([r.event for r in batch])
        except (OperationalError, DatabaseUnavailable) as exc:
            self._fail_all(batch, exc)
            return
        except DBAPIError as exc:
            if exc.connection_invalidated:
                self._fail_all(batch, exc)
                return
            # One bad row must not fail its neighbours: store them one by one.
            log.warning("batch insert failed, retrying one by one", extra={"error": str(exc)})
            for request in batch:
                self._write_one(request)
            return
        except Exception as exc:
            self._fail_all(batch, exc)
            return
        for request, result in zip(batch, results, strict=True):
            _resolve(request, result)
        self._ring([r for r in results if r.status in RINGABLE])

    def _write_one(self, request: _Request) -> None:
        try:
            [result] = self._commit([request.event])
        except Exception as exc:
            self._fail_all([request], exc)
            return
        _resolve(request, result)
        self._ring([result] if result.status in RINGABLE else [])

    def _commit(self, events: list[IncomingEvent]) -> list[Recorded]:
        with self._engine.begin() as conn:
            return store.record(conn, events, utcnow())

    def _fail_all(self, batch: list[_Request], exc: BaseException) -> None:
        log.error(
            "could not store events", extra={"error": type(exc).__name__, "count": len(batch)}
        )
        for request in batch:
            _reject(request, DatabaseUnavailable("database unavailable, try again later"))

    def _ring(self, results: list[Recorded]) -> None:
        if not results:
            return
        try:
            self._on_committed(sorted({r.id for r in results}))
        except Exception:  # a bell that fails delays work; it never fails a stored request
            log.warning("doorbell failed; the sweeper will find the rows", exc_info=True)


def _resolve(request: _Request, result: Recorded) -> None:
    def settle() -> None:
        if not request.future.done():
            request.future.set_result(result)

    request.loop.call_soon_threadsafe(settle)


def _reject(request: _Request, exc: BaseException) -> None:
    def settle() -> None:
        if not request.future.done():
            request.future.set_exception(exc)

    request.loop.call_soon_threadsafe(settle)
