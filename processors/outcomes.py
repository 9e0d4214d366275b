"""How each row of a batch ended, told: counted in the metrics, timed, and logged as one
JSON line per row (outbox.logs.LINES for the routine ones)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from outbox.handling import Handler, describe
from outbox.logs import LINES
from processors import traces
from processors.metrics import EVENT_SECONDS, EVENTS_PROCESSED, observe_batch, type_family
from processors.steps import Outcome, Step

log = logging.getLogger("outbox.processors")


#: Outcomes logged at INFO; the others are warnings.
_ROUTINE = (Outcome.DONE, Outcome.SKIPPED, Outcome.RELEASED)


def report(steps: Sequence[Step], counts: dict[Outcome, int]) -> None:
    """Count, time and log how each row ended: one JSON log line per row, as the README
    promises. The rows that ended routinely go out as one record per outcome carrying a
    line each (outbox.logs.LINES), and are counted with one `inc(n)` per outcome: per row,
    logging's machinery and the metrics' label lookups cost more than the lines."""
    finished = time.perf_counter()
    logged = log.isEnabledFor(logging.INFO)
    routine: dict[Outcome, list[dict[str, Any]]] = {}
    counted: dict[tuple[str, str, Outcome], int] = {}
    timers: dict[str, Any] = {}
    for step in steps:
        outcome = step.outcome or Outcome.UNRECORDED
        counts[outcome] = counts.get(outcome, 0) + 1
        traces.end_event(step.event, outcome.value, step.error)
        source = step.event.source
        key = (source, type_family(step.event.event_type), outcome)
        counted[key] = counted.get(key, 0) + 1
        timer = timers.get(source) or timers.setdefault(source, EVENT_SECONDS.labels(source))
        elapsed = finished - step.started
        timer.observe(elapsed)
        if outcome in _ROUTINE:
            if logged:
                routine.setdefault(outcome, []).append(_fields(step, outcome, elapsed))
        elif log.isEnabledFor(logging.WARNING):
            log.warning("event %s", outcome.value, extra=_fields(step, outcome, elapsed))
    for (source, family, outcome), number in counted.items():
        EVENTS_PROCESSED.labels(source, family, outcome.value).inc(number)
    if steps:
        observe_batch(len(steps), finished - min(step.started for step in steps))
    for outcome, lines in routine.items():
        log.info("event %s", outcome.value, extra={LINES: lines})


def _fields(step: Step, outcome: Outcome, elapsed: float) -> dict[str, Any]:
    """The fields of a row's outcome line."""
    event = step.event
    fields: dict[str, Any] = {
        "event_id": event.id,
        "source": event.source,
        "delivery_id": event.delivery_id,
        "event_type": event.event_type,
        "attempt": event.attempts,
        "outcome": outcome.value,
        "ms": round(elapsed * 1000, 2),
    }
    error = step.error
    for key, value in (
        ("handler", _name(step.handler)),
        ("reason", step.skip_reason),
        ("error", describe(error) if error is not None and outcome != Outcome.DONE else None),
    ):
        if value is not None:
            fields[key] = value[:500]
    return fields


def _name(handler: Handler | None) -> str | None:
    return handler.name if handler is not None else None
