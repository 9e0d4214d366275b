"""Recording: each delivery stored once, its bytes exact, on Postgres and SQLite."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from sqlalchemy import select, text

from outbox import store
from outbox.db import make_engine
from outbox.models import WebhookEvent
from outbox.retry import RetryPolicy
from tests.conftest import CORPUS
from tests.factories import incoming, record
from tests.outbox import storage_support as support


def test_record_stores_a_delivery_once_and_reports_repeats(engine):
    first = record(engine, incoming("evt_1"), incoming("evt_2"))
    again = record(engine, incoming("evt_1"), incoming("evt_3"), incoming("evt_3"))
    assert [r.duplicate for r in first] == [False, False]
    assert [r.duplicate for r in again] == [True, False, True]
    assert again[0].id == first[0].id and again[1].id == again[2].id
    with engine.connect() as conn:
        assert conn.execute(select(WebhookEvent.id)).all().__len__() == 3


def test_record_keeps_the_exact_bytes(engine, sessions):
    item = incoming("evt_bytes")
    raw = b'{"id": "evt_bytes",  "x": "\\u00e9\\u2665" }\n'
    item = store.IncomingEvent(**{**item.__dict__, "raw_body": raw})
    [result] = record(engine, item)
    assert support.row(sessions, result.id).raw_body == raw


def test_retry_policy_spans_about_a_day():
    span = RetryPolicy().total_span()
    assert timedelta(hours=18) < span < timedelta(hours=30)


@pytest.mark.postgres
def test_bodies_are_compressed_with_lz4_on_postgres_and_read_back_whole(postgres_url):
    engine = make_engine(postgres_url)
    body = (CORPUS / "stripe" / "fixtures3.json").read_bytes()  # 188 KB: well past 2 KB
    item = dataclasses.replace(incoming("evt_lz4"), raw_body=body)
    try:
        [recorded] = record(engine, item)
        with engine.connect() as conn:
            method = conn.execute(
                text("SELECT pg_column_compression(raw_body) FROM webhook_events WHERE id = :id"),
                {"id": recorded.id},
            ).scalar()
            stored = conn.execute(
                select(WebhookEvent.raw_body).where(WebhookEvent.id == recorded.id)
            ).scalar()
        assert method == "lz4"
        assert stored == body
    finally:
        with engine.begin() as conn:  # the run's database is shared by the tests after this one
            conn.execute(text("DELETE FROM webhook_events WHERE delivery_id = 'evt_lz4'"))
        engine.dispose()
