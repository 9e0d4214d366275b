"""The Redis broker the worker processes use."""

from __future__ import annotations

from outbox.settings import Settings
from processors.broker import DELAY_QUEUE_POLL_MS, setup_broker


def test_delay_queues_are_polled_seldom_and_event_queues_at_the_workers_poll():
    broker = setup_broker(Settings(redis_url="redis://127.0.0.1:6379/0"), in_process=False)
    try:
        assert broker.consume("events", prefetch=4, timeout=20).timeout == 20
        delayed = broker.consume("events.DQ", prefetch=4, timeout=20)
        assert delayed.timeout == DELAY_QUEUE_POLL_MS
    finally:
        broker.close()
