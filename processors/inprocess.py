"""The processors inside one process, with no Redis: `outbox dev`, tests and drills.

The same actors, apply step and sweeper as `outbox worker` and `outbox sweep`, only the
broker is Dramatiq's in-memory StubBroker and its worker runs as threads here.
"""

from __future__ import annotations

import threading
from types import TracebackType

import dramatiq
from sqlalchemy import Engine

from outbox.doorbell import Doorbell
from outbox.settings import Settings
from processors import runtime
from processors.broker import setup_broker
from processors.sweeper import run_sweeper

#: Worker threads on SQLite: it has one write lock, so more threads only queue for it.
SQLITE_THREADS = 2
#: Milliseconds a stopping worker waits for the messages it is running.
STOP_TIMEOUT_MS = 10_000


class InProcessProcessors:
    """Broker, worker threads and (optionally) the sweeper loop, started and stopped together.

    :param settings: the process's settings (database, lease, retry policy, handlers).
    :param engine: share an engine with the caller (an ingress in the same process).
    :param threads: worker threads; SQLite gets `SQLITE_THREADS` unless given.
    :param sweep: run the sweeper loop in a thread every SWEEP_INTERVAL_SECONDS.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        engine: Engine | None = None,
        threads: int | None = None,
        sweep: bool = True,
    ) -> None:
        self.settings = settings
        self.runtime = runtime.configure(settings, engine=engine)
        self.runtime.handlers  # noqa: B018  (a bad HANDLER_TABLE fails here, not on each event)
        self.broker = setup_broker(settings, in_process=True)
        default_threads = SQLITE_THREADS if settings.is_sqlite else settings.worker_threads
        self.worker = dramatiq.Worker(self.broker, worker_threads=threads or default_threads)
        self._sweep = sweep
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None

    @property
    def doorbell(self) -> Doorbell:
        from processors.event_actor import EventsDoorbell

        return EventsDoorbell()

    def start(self) -> InProcessProcessors:
        self.worker.start()
        if self._sweep:
            self._sweeper = threading.Thread(
                target=run_sweeper, args=(self.runtime, self._stop), name="outbox-sweeper"
            )
            self._sweeper.daemon = True
            self._sweeper.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._sweeper is not None:
            self._sweeper.join(timeout=10)
        self.worker.stop(timeout=STOP_TIMEOUT_MS)
        self.broker.close()
        self.runtime.close()

    def __enter__(self) -> InProcessProcessors:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
