"""The Redis broker the worker processes use."""

from __future__ import annotations

import logging
import time

import pytest

from outbox.settings import Settings
from processors.broker import DELAY_QUEUE_POLL_MS, setup_broker
from processors.event_actor import process_events
from tests.fault_proxy import FaultProxy
from tests.services import RedisServer, fresh_namespace


def test_delay_queues_are_polled_seldom_and_event_queues_at_the_workers_poll():
    broker = setup_broker(Settings(redis_url="redis://127.0.0.1:6379/0"), in_process=False)
    try:
        assert broker.consume("events", prefetch=4, timeout=20).timeout == 20
        delayed = broker.consume("events.DQ", prefetch=4, timeout=20)
        assert delayed.timeout == DELAY_QUEUE_POLL_MS
    finally:
        broker.close()


@pytest.mark.redis
def test_a_consumer_whose_redis_stops_answering_warns_and_resumes_on_a_new_connection(caplog):
    timeout = 0.5
    with RedisServer() as server, FaultProxy(server.port) as proxy:
        settings = Settings(
            redis_url=f"redis://127.0.0.1:{proxy.port}/0",
            redis_namespace=fresh_namespace(),
            redis_timeout_seconds=timeout,
        )
        broker = setup_broker(settings, in_process=False)
        try:
            consumer = broker.consume("events", prefetch=1, timeout=20)
            assert next(consumer) is None  # connected, nothing queued yet
            proxy.freeze()  # a failover: the old connections frozen, new ones reach Redis
            process_events.send([1])  # on a new connection: the frozen one was only read
            started = time.monotonic()
            message = None
            while message is None and time.monotonic() - started < 10:
                message = next(consumer)
            assert message is not None and message.args == ([1],)
            assert time.monotonic() - started < 2 * timeout + 2.0
            consumer.ack(message)
        finally:
            broker.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(m.startswith("redis call missed its 0.5 s deadline") for m in warnings)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
