"""The backlog as gauges: what waits, how long, and what needs an operator.

Read by the sweeper's metrics server at each scrape, in one statement whose every part
walks a partial index (rows due, rows processing, dead rows, open jobs, unreported usage
records): its cost is that of the rows still in play, never of the tables.

    outbox_due_events                        rows due now (pending, next attempt passed)
    outbox_oldest_due_seconds                how long the oldest due row has been due
    outbox_dead_events                       rows that exhausted their attempts
    outbox_expired_leases                    rows claimed by a worker whose lease ran out
    outbox_jobs{status}                      PR jobs pending, validated, running
    outbox_unreported_usage_records          usage records Stripe has not taken yet
    outbox_oldest_unreported_usage_seconds   age of the oldest of them
    outbox_backlog_up                        1 when the last read worked, else 0
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from domain.jobs import JobStatus, PrJob
from domain.usage import UsageRecord
from outbox.db import utcnow
from outbox.models import Status, WebhookEvent

log = logging.getLogger("outbox.backlog")

#: Seconds a read is reused: two Prometheus servers scraping at once cost one statement.
BACKLOG_MAX_AGE = 1.0
#: Open job statuses, each counted through the partial index that holds it.
OPEN_JOB_STATUSES = (JobStatus.PENDING, JobStatus.VALIDATED, JobStatus.RUNNING)


@dataclass(frozen=True)
class Backlog:
    due: int
    oldest_due_seconds: float
    dead: int
    expired_leases: int
    jobs: dict[str, int]
    unreported_usage: int
    oldest_unreported_usage_seconds: float


def read_backlog(session: Session, now: datetime) -> Backlog:
    """One statement of scalar subqueries, each on a partial index."""
    e, job, usage = WebhookEvent, PrJob, UsageRecord
    due = (e.status == Status.PENDING.value, e.next_attempt_at <= now)
    unreported = usage.reported_at.is_(None)
    parts = [
        select(func.count()).where(*due),
        select(func.min(e.next_attempt_at)).where(*due),
        select(func.count()).where(e.status == Status.DEAD.value),
        select(func.count()).where(e.status == Status.PROCESSING.value, e.lease_expires_at <= now),
        *(select(func.count()).where(job.status == s.value) for s in OPEN_JOB_STATUSES),
        select(func.count()).where(unreported),
        select(func.min(usage.created_at)).where(unreported),
    ]
    row = session.execute(select(*(part.scalar_subquery() for part in parts))).one()
    oldest_due, oldest_usage = row[1], row[-1]
    return Backlog(
        due=row[0],
        oldest_due_seconds=_age(now, oldest_due),
        dead=row[2],
        expired_leases=row[3],
        jobs={s.value: row[4 + i] for i, s in enumerate(OPEN_JOB_STATUSES)},
        unreported_usage=row[-2],
        oldest_unreported_usage_seconds=_age(now, oldest_usage),
    )


def _age(now: datetime, since: datetime | None) -> float:
    return 0.0 if since is None else max(0.0, (now - since).total_seconds())


class BacklogCollector(Collector):
    """The backlog gauges, read at most every BACKLOG_MAX_AGE seconds, at scrape time."""

    def __init__(self, sessions: Callable[[], Session]) -> None:
        self._sessions = sessions
        self._lock = threading.Lock()
        self._read_at = -BACKLOG_MAX_AGE
        self._last: Backlog | None = None

    def collect(self) -> Iterator[Metric]:
        backlog = self._current()
        yield GaugeMetricFamily(
            "outbox_backlog_up",
            "1 when the backlog gauges were read from the database, 0 when it failed",
            value=0 if backlog is None else 1,
        )
        if backlog is None:
            return
        for name, text, value in (
            ("outbox_due_events", "Rows due now (pending, next attempt passed)", backlog.due),
            (
                "outbox_oldest_due_seconds",
                "How long the oldest due row has been due (0: none)",
                backlog.oldest_due_seconds,
            ),
            ("outbox_dead_events", "Rows that exhausted their attempts", backlog.dead),
            (
                "outbox_expired_leases",
                "Rows claimed by a worker whose lease ran out",
                backlog.expired_leases,
            ),
            (
                "outbox_unreported_usage_records",
                "Usage records Stripe has not taken yet",
                backlog.unreported_usage,
            ),
            (
                "outbox_oldest_unreported_usage_seconds",
                "Age of the oldest usage record Stripe has not taken (0: none)",
                backlog.oldest_unreported_usage_seconds,
            ),
        ):
            yield GaugeMetricFamily(name, text, value=value)
        jobs = GaugeMetricFamily("outbox_jobs", "Open PR jobs by status", labels=["status"])
        for status, count in backlog.jobs.items():
            jobs.add_metric([status], count)
        yield jobs

    def _current(self) -> Backlog | None:
        with self._lock:
            if time.monotonic() - self._read_at < BACKLOG_MAX_AGE:
                return self._last
            try:
                with self._sessions() as session:
                    self._last = read_backlog(session, utcnow())
            except Exception as exc:
                log.warning("could not read the backlog gauges", extra={"error": repr(exc)[:300]})
                self._last = None
            self._read_at = time.monotonic()
            return self._last
