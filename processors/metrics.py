"""Prometheus metrics of the processors.

Served by `outbox dev` on GET /metrics, by `outbox sweep` and by `outbox worker` on
METRICS_PORT (processors/metrics_server.py; the worker's processes write them to files of
PROMETHEUS_MULTIPROC_DIR, summed when served). The backlog gauges are read from the
database by the sweeper at each scrape (processors/backlog.py).
"""

from __future__ import annotations

import functools
import re

from prometheus_client import Counter, Histogram

EVENTS_PROCESSED = Counter(
    "outbox_events_processed",
    "Claimed events by source, type family (pull_request, invoice, customer.subscription, "
    "...) and outcome (done, skipped, retry, dead, lease_lost, released, unrecorded)",
    ["source", "family", "outcome"],
)
EVENT_SECONDS = Histogram(
    "outbox_event_processing_seconds",
    "Time from claiming an event to recording its outcome",
    ["source"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
BATCH_SECONDS = Histogram(
    "outbox_batch_seconds",
    "Time one batch of claimed events took, from its claim to its last outcome",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
BATCH_SIZE = Histogram(
    "outbox_batch_size",
    "Events in one batch of claimed events",
    buckets=(1, 2, 5, 10, 20, 30, 40, 50, 100),
)
SWEEP_RUNG = Counter(
    "outbox_sweep_rung",
    "Ids the sweeper rang again, by sweep source",
    ["source"],
)
SWEEP_RELEASED = Counter(
    "outbox_sweep_released_leases",
    "Processing rows whose lease expired and that the sweeper gave back",
)
SWEEP_FAILURES = Counter(
    "outbox_sweep_failures",
    "Sweeper steps that failed (database or broker unreachable), by step",
    ["step"],
)

#: Type families a process labels at most; past them, "other" (event types are chosen by
#: the providers, not by senders, yet a label must never grow without bound).
MAX_FAMILIES = 200
_TYPE = re.compile(r"[a-z0-9_]+(?:\.[a-z0-9_]+)*")
_families: set[str] = set()


@functools.lru_cache(maxsize=1024)
def type_family(event_type: str) -> str:
    """The event type without its last part: `pull_request.opened` -> `pull_request`,
    `customer.subscription.updated` -> `customer.subscription`, `push` -> `push`."""
    if len(event_type) > 100 or not _TYPE.fullmatch(event_type):
        return "other"
    family = event_type.rpartition(".")[0] or event_type
    if family not in _families:
        if len(_families) >= MAX_FAMILIES:
            return "other"
        _families.add(family)
    return family


def observe_batch(size: int, seconds: float) -> None:
    BATCH_SIZE.observe(size)
    BATCH_SECONDS.observe(seconds)
