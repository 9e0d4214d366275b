"""Prometheus metrics of the processors (served by `outbox dev` on GET /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

EVENTS_PROCESSED = Counter(
    "outbox_events_processed",
    "Claimed events by outcome (done, skipped, retry, dead, lease_lost, unrecorded)",
    ["source", "outcome"],
)
EVENT_SECONDS = Histogram(
    "outbox_event_processing_seconds",
    "Time from claiming an event to recording its outcome",
    ["source"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
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
