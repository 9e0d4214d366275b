"""The ingress's webhook figures (ingress/metrics.py) expose what prometheus_client's own
Counter and Histogram would for the same requests."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from ingress.metrics import HANDLING_BUCKETS, WebhookFigures

SECONDS = [0.0005, 0.001, 0.0012, 0.0025, 0.004, 0.2, 7.0]


def _without_created(text: bytes) -> list[str]:
    return [line for line in text.decode().splitlines() if "_created" not in line]


def test_the_figures_are_the_samples_of_a_counter_and_a_histogram():
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    figures = WebhookFigures()
    ours.register(figures)
    counter = Counter(
        "outbox_webhook_requests",
        "Webhook requests by source and outcome "
        "(stored, duplicate, unauthorized, bad_request, ...)",
        ["source", "outcome"],
        registry=theirs,
    )
    histogram = Histogram(
        "outbox_webhook_handling_seconds",
        "Time from the request's arrival to its answer",
        ["source"],
        buckets=HANDLING_BUCKETS,
        registry=theirs,
    )
    for source, outcome in [("github", "stored"), ("github", "stored"), ("stripe", "error")]:
        figures.count(source, outcome)
        counter.labels(source, outcome).inc()
    for seconds in SECONDS:
        figures.observe("github", seconds)
        histogram.labels("github").observe(seconds)

    assert _without_created(generate_latest(ours)) == _without_created(generate_latest(theirs))
    created = [line for line in generate_latest(ours).decode().splitlines() if "_created{" in line]
    assert len(created) == 3  # one a counted label set, one a histogram's source
