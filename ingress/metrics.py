"""Prometheus metrics of the ingress (served on GET /metrics)."""

from __future__ import annotations

import functools

from prometheus_client import Counter, Histogram

REQUESTS = Counter(
    "outbox_webhook_requests",
    "Webhook requests by source and outcome (stored, duplicate, unauthorized, bad_request, ...)",
    ["source", "outcome"],
)
HANDLING_SECONDS = Histogram(
    "outbox_webhook_handling_seconds",
    "Time from the request's arrival to its answer",
    ["source"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
DOORBELL_FAILURES = Counter(
    "outbox_doorbell_failures",
    "Rings that could not be sent (the sweeper picks those rows up later)",
)


# labels() takes a lock and builds a key at every call; the few children the ingress
# uses are looked up once (both caches stay as small as sources x outcomes).
@functools.cache
def requests_counter(source: str, outcome: str) -> Counter:
    return REQUESTS.labels(source, outcome)


@functools.cache
def handling_seconds(source: str) -> Histogram:
    return HANDLING_SECONDS.labels(source)


EDGE_REFUSALS = Counter(
    "outbox_edge_refusals",
    "Connections answered and closed before the app had a whole request "
    "(header_too_large, header_timeout, body_timeout, too_many_connections, idle)",
    ["outcome"],
)


@functools.cache
def edge_refusals(outcome: str) -> Counter:
    return EDGE_REFUSALS.labels(outcome)
