"""The sweeper: finds work that nobody is ringing for, so a lost message only delays it.

One pass:
1. gives back `processing` rows whose lease ran out (the worker was killed or hung):
   they are due again at once, or dead if that was their last attempt
   (`recovery.release_expired`);
2. asks every sweep source for the ids that are due and rings them again.

Every PARTITION_UPKEEP_EVERY seconds the loop also makes the partitions of webhook_events
ahead of need (outbox/partitions.py; Postgres, once the table is partitioned).

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

A source whose `enqueue` returns its rings (`Ring`: the broker's message id and the ids
it names) and that says which rings are still out (`rings_out`: waiting in the broker, or
taken and not yet acknowledged) is rung at most once per row: a due row named by a ring
still out is not rung again, and each pass rings due rows until RUNG_OUT_MAX rows are
out. While workers are down the queue so holds each due row once (up to that bound),
instead of the same oldest rows again at every pass. Rings are remembered by the
sweeper's process (a restarted sweeper rings each due row once more), and forgotten when
a pass gives back expired leases: a worker that died may have held messages that would
otherwise stand for their rows until Dramatiq's maintenance requeues them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session

from outbox import recovery
from outbox.db import transaction, utcnow
from outbox.handling import describe
from outbox.partitions import keep_partitions
from processors.metrics import SWEEP_FAILURES, SWEEP_RELEASED, SWEEP_RUNG
from processors.runtime import Runtime

log = logging.getLogger("outbox.sweeper")

#: Ids rung per pass at most for a source whose rings are not followed; a larger backlog
#: is drained over several passes (and by the workers' own extra claims).
SWEEP_BATCH = 1000
#: Rows a followed source may have named by rings still out: each pass rings due rows up
#: to this (not SWEEP_BATCH), and nothing more while that many are out. Two workers drain
#: this many in a few seconds; the queue a stopped worker pool comes back to is at most
#: this many rows, each named once.
RUNG_OUT_MAX = 20_000
#: Seconds after which a ring still out is forgotten and its rows rung again: a message
#: held by a worker that died comes back through Dramatiq's maintenance well before.
RING_PATIENCE = 900.0
#: Seconds between two partition upkeeps: a catalog read when nothing is missing, and
#: partitions are made PARTITIONS_AHEAD intervals ahead, so a few minutes is ample.
PARTITION_UPKEEP_EVERY = 300.0


@dataclass(frozen=True)
class Ring:
    """One message a source sent: the broker's id for it, and the row ids it names."""

    message_id: str
    ids: Sequence[int]


@dataclass(frozen=True)
class SweepSource:
    """A kind of row the sweeper rings for: how to find the due ones, how to ring them."""

    name: str
    find_due: Callable[[Session, datetime, int], list[int]]
    enqueue: Callable[[list[int]], Sequence[Ring] | None]
    #: Does the work of these ids in this process, for when `enqueue` fails.
    work_here: Callable[[Runtime, list[int]], None] | None = None
    #: Which of these message ids are still out; None: rings are not followed, and every
    #: due row is rung at every pass.
    rings_out: Callable[[list[str]], set[str]] | None = None


class RingLedger:
    """The rings a sweeper sent that are still out, per source: the rows they name are
    not rung again while their message waits or is being worked on."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._rings: dict[str, dict[str, tuple[float, Sequence[int]]]] = {}

    def rows_out(self, source: SweepSource) -> set[int]:
        """The rows named by `source`'s rings still out (asks the broker; may raise)."""
        rings = self._rings.get(source.name)
        if not rings or source.rings_out is None:
            return set()
        now = self._clock()
        for message_id in [m for m, (sent, _) in rings.items() if now - sent > RING_PATIENCE]:
            del rings[message_id]
        out = source.rings_out(list(rings))
        for message_id in [m for m in rings if m not in out]:
            del rings[message_id]
        return {row for _, ids in rings.values() for row in ids}

    def remember(self, source: SweepSource, rings: Sequence[Ring] | None) -> None:
        if source.rings_out is None or not rings:
            return
        sent = self._clock()
        self._rings.setdefault(source.name, {}).update(
            (ring.message_id, (sent, ring.ids)) for ring in rings
        )

    def forget_all(self) -> None:
        self._rings.clear()


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
    ledger: RingLedger | None = None,
) -> SweepReport:
    """One pass: release expired leases, then ring what every source says is due.

    With a `ledger` (the sweeper's loop keeps one), a followed source's rows named by its
    rings still out are not rung again. Each step fails alone (database or broker down):
    the report says which, the others run.
    """
    report = SweepReport()
    now = utcnow()
    try:
        with transaction(runtime.sessions) as session:
            report.released = recovery.release_expired(session, now=now, policy=runtime.policy)
        SWEEP_RELEASED.inc(report.released)
        if report.released and ledger is not None:
            ledger.forget_all()
    except Exception as exc:
        _failed(report, "release_expired", exc)
    for source in registered_sweep_sources() if sources is None else sources:
        ids: list[int] = []
        try:
            followed = ledger is not None and source.rings_out is not None
            out = ledger.rows_out(source) if ledger is not None else set()
            # A followed source is topped up to RUNG_OUT_MAX rows out at every pass: workers
            # coming back after an outage drain at their own pace, not at `limit` a pass.
            room = RUNG_OUT_MAX - len(out) if followed else limit
            if room > 0:
                with runtime.sessions() as session:
                    due = source.find_due(session, now, len(out) + room)
                ids = [i for i in due if i not in out][:room]
            if ids:
                rings = source.enqueue(ids)
                if ledger is not None:
                    ledger.remember(source, rings)
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
    report.errors[step] = describe(exc)[:300]
    SWEEP_FAILURES.labels(step).inc()


def upkeep_partitions(runtime: Runtime) -> None:
    """Make the partitions ahead; a failure is logged and counted, the next upkeep retries."""
    settings = runtime.settings
    try:
        keep_partitions(runtime.engine, settings.partition_interval, settings.partitions_ahead)
    except Exception as exc:
        log.warning("partition upkeep failed: %s", describe(exc)[:300])
        SWEEP_FAILURES.labels("partitions").inc()


def run_sweeper(runtime: Runtime, stop: threading.Event, interval: float | None = None) -> None:
    """Start a pass every `interval` seconds (SWEEP_INTERVAL_SECONDS) until `stop` is set.

    Passes start on a fixed beat, so a pass's own time does not stretch the interval a
    row may wait; a pass longer than the interval is followed by the next one at once.
    """
    period = interval if interval is not None else runtime.settings.sweep_interval_seconds
    next_start = time.monotonic()
    next_upkeep = next_start
    ledger = RingLedger()
    while not stop.is_set():
        if time.monotonic() >= next_upkeep:
            upkeep_partitions(runtime)
            next_upkeep = time.monotonic() + PARTITION_UPKEEP_EVERY
        sweep_once(runtime, ledger=ledger)
        next_start = max(next_start + period, time.monotonic())
        stop.wait(next_start - time.monotonic())
