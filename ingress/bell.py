"""Rings the doorbell off the request path, so a slow or absent broker never holds up an answer."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence

from ingress.metrics import DOORBELL_FAILURES
from outbox.doorbell import Doorbell

log = logging.getLogger("outbox.ingress.bell")

MAX_WAITING = 10_000  #: rings held while the broker is slow; past that they are dropped
MAX_IDS_PER_RING = 100  #: ids sent in one message at most
#: seconds the bell rests after the broker failed. Rings queued meanwhile wait (or are
#: dropped past MAX_WAITING; the sweeper rings for those rows): retrying at once cost a
#: failed connection attempt per batch, on the interpreter the requests need.
REST_AFTER_FAILURE = 1.0


class BackgroundBell:
    """Queues rings and sends them from one thread, merging the ones that queued together."""

    def __init__(self, doorbell: Doorbell) -> None:
        self._doorbell = doorbell
        self._queue: queue.Queue[list[int] | None] = queue.Queue(MAX_WAITING)
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def start(self) -> None:
        if self._thread is None:
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name="outbox-bell", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._stopping.set()
            self._queue.put(None)
            self._thread.join(timeout=10)
            self._thread = None

    def ring_later(self, event_ids: Sequence[int]) -> None:
        try:
            self._queue.put_nowait(list(event_ids))
        except queue.Full:  # the sweeper finds these rows; the answer must not wait
            DOORBELL_FAILURES.inc()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            ids = list(first)
            stop = False
            while len(ids) < MAX_IDS_PER_RING:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                ids.extend(more)
            for start in range(0, len(ids), MAX_IDS_PER_RING):
                if not self._send(ids[start : start + MAX_IDS_PER_RING]):
                    self._stopping.wait(REST_AFTER_FAILURE)
            if stop:
                return

    def _send(self, ids: list[int]) -> bool:
        try:
            self._doorbell.ring(ids)
        except Exception as exc:
            DOORBELL_FAILURES.inc()
            log.warning(
                "doorbell failed; the sweeper will find the rows",
                extra={"error": type(exc).__name__, "count": len(ids)},
            )
            return False
        return True
