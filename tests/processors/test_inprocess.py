"""End to end in one process: a signed webhook in, the in-process worker applies it, row done."""

from __future__ import annotations

import json

import dramatiq
import pytest
from starlette.testclient import TestClient

from ingress.app import create_app
from outbox.models import Status, WebhookEvent
from processors import runtime as runtimes
from processors.broker import setup_broker
from processors.inprocess import InProcessProcessors
from processors.loop_doorbell import RedisLoopDoorbell
from tests.factories import stripe_event_body, stripe_headers
from tests.processors.handlers import TEST_EVENT_TYPE, effect_counts
from tests.services import wait_until


def statuses(engine) -> dict[int, str]:
    with engine.connect() as conn:
        return dict(conn.execute(WebhookEvent.__table__.select().with_only_columns(
            WebhookEvent.id, WebhookEvent.status)).all())  # fmt: skip


def post_events(client: TestClient, count: int, **script) -> list[int]:
    ids = []
    for n in range(count):
        event = json.loads(stripe_event_body({"id": f"obj_{n}"}, TEST_EVENT_TYPE))
        body = json.dumps({**event, "test": script}).encode()
        answer = client.post("/webhooks/stripe", content=body, headers=stripe_headers(body))
        assert answer.status_code == 200, answer.text
        ids.append(answer.json()["id"])
    return ids


def test_webhooks_posted_to_the_ingress_are_applied_by_the_in_process_worker(
    proc_settings, effects_engine
):
    with InProcessProcessors(proc_settings, engine=effects_engine, threads=2) as processors:
        app = create_app(proc_settings, engine=effects_engine, doorbell=processors.doorbell)
        with TestClient(app) as client:
            ids = post_events(client, 12)
            wait_until(lambda: set(statuses(effects_engine).values()) == {Status.DONE})
    assert effect_counts(effects_engine) == dict.fromkeys(ids, 1)


def test_a_retry_is_rung_by_the_in_process_sweeper_when_it_becomes_due(
    proc_settings, effects_engine
):
    with InProcessProcessors(proc_settings, engine=effects_engine, threads=1) as processors:
        app = create_app(proc_settings, engine=effects_engine, doorbell=processors.doorbell)
        with TestClient(app) as client:
            [event_id] = post_events(client, 1, fail_until=3)
            wait_until(lambda: statuses(effects_engine)[event_id] == Status.DONE)
    with runtimes.current().sessions() as session:
        assert session.get_one(WebhookEvent, event_id).attempts == 3
    assert effect_counts(effects_engine) == {event_id: 1}


@pytest.mark.redis
def test_the_redis_doorbell_reaches_a_worker_through_the_real_redis(
    proc_settings, effects_engine, redis_url
):
    runtimes.configure(proc_settings, engine=effects_engine)
    broker = setup_broker(proc_settings, in_process=False)
    worker = dramatiq.Worker(broker, worker_threads=2)
    worker.start()
    try:
        app = create_app(
            proc_settings, engine=effects_engine, doorbell=RedisLoopDoorbell(proc_settings)
        )
        with TestClient(app) as client:
            ids = post_events(client, 5)
            wait_until(lambda: set(statuses(effects_engine).values()) == {Status.DONE})
    finally:
        worker.stop()
        for queue in broker.get_declared_queues():
            broker.flush(queue)
        broker.close()
    assert effect_counts(effects_engine) == dict.fromkeys(ids, 1)
