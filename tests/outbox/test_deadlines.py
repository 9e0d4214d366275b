"""Deadlines on database calls (outbox/deadlines.py), through a proxy that can freeze the link."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from outbox.db import make_engine
from outbox.deadlines import call_deadline
from tests.fault_proxy import FaultProxy

pytestmark = pytest.mark.postgres

TIMEOUT = 0.5  #: seconds: DATABASE_TIMEOUT_SECONDS here
SLACK = 1.5  #: seconds a loaded machine may add


def stalled_calls() -> float:
    return REGISTRY.get_sample_value("outbox_stalled_calls_total", {"service": "postgres"}) or 0.0


@pytest.fixture
def proxied(postgres_url: str) -> Iterator[tuple[FaultProxy, Engine]]:
    url = make_url(postgres_url)
    with FaultProxy(url.port or 5432) as proxy:
        engine = make_engine(url.set(port=proxy.port).render_as_string(False), timeout=TIMEOUT)
        try:
            yield proxy, engine
        finally:
            engine.dispose()


def test_a_call_with_no_answer_costs_its_connection_and_the_next_call_opens_a_new_one(
    proxied: tuple[FaultProxy, Engine], caplog: pytest.LogCaptureFixture
) -> None:
    proxy, engine = proxied
    with engine.connect() as conn:
        before = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        stalls = stalled_calls()
        proxy.freeze()  # this connection's bytes go nowhere from now on; new ones flow
        started = time.monotonic()
        with pytest.raises(OperationalError, match="no answer from the database within"):
            conn.execute(text("SELECT 1"))
        assert time.monotonic() - started < call_deadline(TIMEOUT) + SLACK
        assert conn.invalidated
    with engine.connect() as conn:
        assert conn.execute(text("SELECT pg_backend_pid()")).scalar() != before
    assert stalled_calls() == stalls + 1
    assert any(
        "missed its" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
    )


def test_a_frozen_connection_in_the_pool_is_replaced_without_failing_the_caller(
    proxied: tuple[FaultProxy, Engine],
) -> None:
    proxy, engine = proxied
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    proxy.freeze()  # the pooled connection is frozen; the pool's ping finds it out
    started = time.monotonic()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar() == 1
    assert time.monotonic() - started < call_deadline(TIMEOUT) + SLACK


def test_a_slow_statement_is_cancelled_by_the_server_and_the_connection_kept(
    proxied: tuple[FaultProxy, Engine],
) -> None:
    _, engine = proxied
    with engine.connect() as conn:
        with pytest.raises(OperationalError, match="statement timeout"):
            conn.execute(text("SELECT pg_sleep(:s)"), {"s": TIMEOUT * 4})
        conn.rollback()
        assert not conn.invalidated
        assert conn.execute(text("SELECT 1")).scalar() == 1


def test_a_connect_that_is_never_answered_fails_within_the_connect_timeout(
    proxied: tuple[FaultProxy, Engine],
) -> None:
    proxy, engine = proxied
    proxy.blackhole()
    started = time.monotonic()
    with pytest.raises(OperationalError), engine.connect():
        pass
    assert time.monotonic() - started < 2 + SLACK  # libpq's smallest connect_timeout
