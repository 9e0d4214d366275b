"""Prometheus metrics of the ingress (served on GET /metrics)."""

from __future__ import annotations

import bisect
import functools
import itertools
import time
from collections.abc import Iterator

from prometheus_client import REGISTRY, Counter
from prometheus_client import metrics as prometheus_metrics
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

HANDLING_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_BOUNDS = (*map(floatToGoString, HANDLING_BUCKETS), "+Inf")  #: the buckets' `le` labels


class WebhookFigures(Collector):
    """outbox_webhook_requests (by source and outcome) and outbox_webhook_handling_seconds
    (by source), kept as plain numbers and made into metrics at each scrape, with the
    samples prometheus_client's Counter and Histogram would give.

    Those take a lock and make several calls at every inc and observe: 1.3 µs of each
    webhook's CPU for its count and its time, against 0.2 µs here. Only the event loop
    adds to these (every webhook is answered on it), so none is needed.
    """

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str], int] = {}
        self._counted_since: dict[tuple[str, str], float] = {}
        #: per source: how many fell in each bucket (not cumulative), +Inf last
        self._buckets: dict[str, list[int]] = {}
        self._sums: dict[str, float] = {}
        self._observed_since: dict[str, float] = {}

    def count(self, source: str, outcome: str) -> None:
        key = (source, outcome)
        if key in self._counts:
            self._counts[key] += 1
        else:
            self._counted_since[key] = time.time()
            self._counts[key] = 1

    def observe(self, source: str, seconds: float) -> None:
        buckets = self._buckets.get(source)
        if buckets is None:
            self._observed_since[source] = time.time()
            self._sums[source] = 0.0
            buckets = self._buckets[source] = [0] * (len(HANDLING_BUCKETS) + 1)
        # A time equal to a bound counts in that bound's bucket (le: less or equal).
        buckets[bisect.bisect_left(HANDLING_BUCKETS, seconds)] += 1
        self._sums[source] += seconds

    def collect(self) -> Iterator[Metric]:
        created = prometheus_metrics._use_created  # PROMETHEUS_DISABLE_CREATED_SERIES
        requests = CounterMetricFamily(
            "outbox_webhook_requests",
            "Webhook requests by source and outcome "
            "(stored, duplicate, unauthorized, bad_request, ...)",
            labels=["source", "outcome"],
        )
        for key, value in list(self._counts.items()):
            since = self._counted_since[key] if created else None
            requests.add_metric(list(key), value, created=since)
        yield requests
        handling = HistogramMetricFamily(
            "outbox_webhook_handling_seconds",
            "Time from the request's arrival to its answer",
            labels=["source"],
        )
        for source, buckets in list(self._buckets.items()):
            cumulative = itertools.accumulate(buckets)
            handling.add_metric(
                [source], list(zip(_BOUNDS, cumulative, strict=True)), self._sums[source]
            )
            if created:
                name = "outbox_webhook_handling_seconds_created"
                since = self._observed_since[source]
                handling.samples.append(Sample(name, {"source": source}, since))
        yield handling


WEBHOOKS = WebhookFigures()
REGISTRY.register(WEBHOOKS)
DOORBELL_FAILURES = Counter(
    "outbox_doorbell_failures",
    "Rings that could not be sent (the sweeper picks those rows up later)",
)


EDGE_REFUSALS = Counter(
    "outbox_edge_refusals",
    "Connections answered and closed before the app had a whole request "
    "(header_too_large, header_timeout, body_timeout, too_many_connections, idle)",
    ["outcome"],
)


# labels() takes a lock and builds a key at every call: each child is looked up once.
@functools.cache
def edge_refusals(outcome: str) -> Counter:
    return EDGE_REFUSALS.labels(outcome)
