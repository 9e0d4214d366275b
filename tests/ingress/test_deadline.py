"""Every webhook is answered within WEBHOOK_DEADLINE_SECONDS, whatever the database does:
2xx once committed, 503 otherwise; a writer whose call outlives DATABASE_TIMEOUT_SECONDS
gives up on it and carries on."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, text
from starlette.testclient import TestClient

from ingress.app import create_app
from outbox.db import make_engine
from outbox.settings import Settings
from tests.factories import github_headers

BODY = b'{"action":"opened","installation":{"id":1}}'
SLACK = 1.0  #: seconds an answer may come after its deadline (a tick, a loaded machine)


@contextmanager
def write_lock_held(engine: Engine) -> Iterator[threading.Event]:
    """Another session holds what the ingress's INSERT needs until the event is set."""
    release = threading.Event()
    held = threading.Event()

    def hold() -> None:
        with engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("SELECT 1")  # the engine's BEGIN IMMEDIATE: the write lock
            else:
                conn.execute(text("LOCK TABLE webhook_events IN SHARE MODE"))
            held.set()
            release.wait(30)
            conn.commit()

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(10)
    try:
        yield release
    finally:
        release.set()
        holder.join(30)


def post(client: TestClient, delivery: str) -> tuple[int, dict[str, object], float]:
    started = time.monotonic()
    response = client.post(
        "/webhooks/github", content=BODY, headers=github_headers(BODY, "issues", delivery=delivery)
    )
    return response.status_code, response.json(), time.monotonic() - started


def test_a_webhook_not_committed_by_its_deadline_is_answered_503_then_and_its_retry_200(
    settings: Settings, database_url: str
) -> None:
    # The database's own timeout is longer than the webhook's: only the answer deadline acts.
    settings = settings.model_copy(
        update={"webhook_deadline_seconds": 1.0, "database_timeout_seconds": 20.0}
    )
    engine = make_engine(database_url)
    try:
        with TestClient(create_app(settings, engine=engine)) as client:
            with write_lock_held(engine):
                status, answer, took = post(client, "late")
            assert status == 503 and "not committed within 1 s" in str(answer["error"])
            assert 1.0 <= took < 1.0 + SLACK
            # The commit came after the answer: the provider's retry is a duplicate.
            status, answer, _ = post(client, "late")
            assert status == 200
    finally:
        engine.dispose()


def test_a_batch_that_outlives_the_database_timeout_fails_and_the_writer_carries_on(
    settings: Settings, database_url: str
) -> None:
    settings = settings.model_copy(
        update={"webhook_deadline_seconds": 10.0, "database_timeout_seconds": 0.5}
    )
    engine = make_engine(database_url, timeout=0.5)
    try:
        with TestClient(create_app(settings, engine=engine)) as client:
            with write_lock_held(engine):
                status, answer, took = post(client, "locked-out")
            assert status == 503, answer
            assert took < 0.5 + 1.0 + SLACK  # the timeout, its grace, the slack
            status, answer, took = post(client, "after-the-lock")
            assert status == 200 and answer["duplicate"] is False
    finally:
        engine.dispose()
