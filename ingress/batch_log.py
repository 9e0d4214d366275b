"""The INFO line of a committed batch: which deliveries it stored, which it already had.

One line per batch, not per webhook: at thousands of webhooks a second, the logging
machinery of a line per request cost a fifth of the ingress's CPU. Every delivery id is
still in a line, so a delivery can be traced by grepping for it; the per-request line,
with its answer time, is at DEBUG, and a refused request is a WARNING of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from outbox.store import IncomingEvent, Recorded

log = logging.getLogger("outbox.ingress")


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
