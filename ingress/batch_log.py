"""What both writers do once a batch has committed: its INFO line (which deliveries it
stored, which it already had), and the ring for the rows the processors should look at.

One line per batch, not per webhook: at thousands of webhooks a second, the logging
machinery of a line per request cost a fifth of the ingress's CPU. Every delivery id is
still in a line, so a delivery can be traced by grepping for it; the per-request line,
with its answer time, is at DEBUG, and a refused request is a WARNING of its own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from outbox.models import Status
from outbox.store import IncomingEvent, Recorded

log = logging.getLogger("outbox.ingress")
writer_log = logging.getLogger("outbox.ingress.writer")

#: Rows worth a ring: new pending rows, and duplicates not yet done.
RINGABLE = (Status.PENDING.value, Status.PROCESSING.value)


def after_commit(
    events: Sequence[IncomingEvent],
    results: Sequence[Recorded],
    started: float,
    on_committed: Callable[[Sequence[int]], None],
) -> None:
    """Log a batch whose statement committed (started at perf_counter `started`), then ring
    for its ringable rows. Call it once the batch's requests have their answers."""
    log_committed(events, results, (time.perf_counter() - started) * 1000)
    ringable = sorted({r.id for r in results if r.status in RINGABLE})
    if not ringable:
        return
    try:
        on_committed(ringable)
    except Exception:  # a bell that fails delays work; it never fails a stored request
        writer_log.warning("doorbell failed; the sweeper will find the rows", exc_info=True)


def log_committed(events: Sequence[IncomingEvent], results: Sequence[Recorded], ms: float) -> None:
    """Log a batch whose statement committed; `results` in the order of `events`."""
    if not log.isEnabledFor(logging.INFO):
        return
    stored: list[str] = []
    duplicates: list[str] = []
    for event, result in zip(events, results, strict=True):
        (duplicates if result.duplicate else stored).append(f"{event.source}:{event.delivery_id}")
    log.info(
        "webhooks committed",
        extra={
            "count": len(events),
            "stored": stored,
            "duplicates": duplicates,
            "ms": round(ms, 2),
        },
    )
