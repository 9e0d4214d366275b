"""The sweeper: finds work that nobody is ringing for, so a lost message only delays it.

One pass:
1. gives back `processing` rows whose lease ran out (the worker was killed or hung):
   they are due again at once, or dead if that was their last attempt
   (`store.release_expired`);
2. asks every sweep source for the ids that are due and rings them again.

A sweep source is another area's table of work with the same shape (a row that is due,
an actor that does it). It is registered once, at import of the module that owns its
actor, so every process that imports `processors.broker.ACTOR_MODULES` knows it:

    register_sweep_source(SweepSource(
        name="pr_jobs",
        find_due=lambda session, now, limit: due_job_ids(session, now=now, limit=limit),
        enqueue=lambda ids: [run_job.send(i) for i in ids],
    ))

`find_due(session, now, limit)` returns at most `limit` ids, oldest first, and only reads;
`enqueue(ids)` sends the messages and may raise (broker down): the next pass tries again.
A source may also say how to do the work here, in the sweeper's own process
(`work_here(runtime, ids)`), for when the broker is down: then Redis being stopped
delays its rows by about one sweep interval instead of until it is back. Events
(`webhook_events`) are registered that way, by processors/events.py.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session

from outbox import store
from outbox.db import transaction, utcnow
from processors.metrics import SWEEP_FAILURES, SWEEP_RELEASED, SWEEP_RUNG
from processors.runtime import Runtime

log = logging.getLogger("outbox.sweeper")

#: Ids rung per source and per pass at most; a larger backlog is drained over several passes
#: (and by the workers' own extra claims).
SWEEP_BATCH = 1000


@dataclass(frozen=True)
class SweepSource:
    """A kind of row the sweeper rings for: how to find the due ones, how to ring them."""

    name: str
    find_due: Callable[[Session, datetime, int], list[int]]
    enqueue: Callable[[list[int]], None]
    #: Does the work of these ids in this process, for when `enqueue` fails.
    work_here: Callable[[Runtime, list[int]], None] | None = None


_sources: dict[str, SweepSource] = {}


def register_sweep_source(source: SweepSource) -> None:
    """Add (or replace, by name) a source every later pass sweeps."""
    _sources[source.name] = source


def registered_sweep_sources() -> list[SweepSource]:
    from processors.broker import import_actor_modules

    import_actor_modules()  # each actor module registers its sources when imported
    return list(_sources.values())


@dataclass
class SweepReport:
    """What one pass did: leases released, ids rung per source, and what failed."""

    released: int = 0
    rung: dict[str, int] = field(default_factory=dict)
    #: Ids a source worked here, in the sweeper, because its broker was down.
    worked_here: dict[str, int] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        parts = [f"released {self.released} expired lease(s)"]
        parts += [f"rang {count} {name}" for name, count in self.rung.items()]
        parts += [f"worked {count} {name} here" for name, count in self.worked_here.items()]
        parts += [f"{step} failed: {error}" for step, error in self.errors.items()]
        return "; ".join(parts)


def sweep_once(
    runtime: Runtime,
    *,
    sources: Sequence[SweepSource] | None = None,
    limit: int = SWEEP_BATCH,
) -> SweepReport:
    """One pass: release expired leases, then ring what every source says is due.

    Each step fails alone (database or broker down): the report says which, the others run.
    """
    report = SweepReport()
    now = utcnow()
    try:
        with transaction(runtime.sessions) as session:
            report.released = store.release_expired(session, now=now, policy=runtime.policy)
        SWEEP_RELEASED.inc(report.released)
    except Exception as exc:
        _failed(report, "release_expired", exc)
    for source in registered_sweep_sources() if sources is None else sources:
        ids: list[int] = []
        try:
            with runtime.sessions() as session:
                ids = source.find_due(session, now, limit)
            if ids:
                source.enqueue(ids)
            report.rung[source.name] = len(ids)
            SWEEP_RUNG.labels(source.name).inc(len(ids))
        except Exception as exc:
            _failed(report, source.name, exc)
            if ids and source.work_here is not None:
                _work_here(runtime, source, ids, report)
    if report.released or any(report.rung.values()) or report.worked_here or report.errors:
        log.log(
            logging.WARNING if report.errors else logging.INFO,
            "sweep: %s",
            report.summary(),
            extra={"released": report.released, "rung": report.rung},
        )
    return report


def _work_here(runtime: Runtime, source: SweepSource, ids: list[int], report: SweepReport) -> None:
    assert source.work_here is not None
    try:
        source.work_here(runtime, ids)
        report.worked_here[source.name] = len(ids)
    except Exception as exc:
        _failed(report, f"{source.name} here", exc)


def _failed(report: SweepReport, step: str, exc: Exception) -> None:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    report.errors[step] = f"{type(exc).__name__}: {text}"[:300]
    SWEEP_FAILURES.labels(step).inc()


def run_sweeper(runtime: Runtime, stop: threading.Event, interval: float | None = None) -> None:
    """Start a pass every `interval` seconds (SWEEP_INTERVAL_SECONDS) until `stop` is set.

    Passes start on a fixed beat, so a pass's own time does not stretch the interval a
    row may wait; a pass longer than the interval is followed by the next one at once.
    """
    period = interval if interval is not None else runtime.settings.sweep_interval_seconds
    next_start = time.monotonic()
    while not stop.is_set():
        sweep_once(runtime)
        next_start = max(next_start + period, time.monotonic())
        stop.wait(next_start - time.monotonic())
