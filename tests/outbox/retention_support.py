"""A partitioned Postgres of daily partitions reaching back into the past, for the purge by
partitions: the migrated test database holds one legacy partition [MINVALUE, tomorrow),
which no purge of a past cut-off removes, so these tests have a database of their own
whose legacy partition is replaced by daily ones."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from outbox import claiming, finishing
from outbox.db import Base, make_engine, transaction, utcnow
from outbox.partition_reads import DETACHED_PARTITIONS
from outbox.partitions import (
    PARENT,
    create_partition,
    interval_start,
    list_partitions,
    partition_name,
)
from outbox.retry import RetryPolicy
from tests.conftest import own_postgres_database
from tests.factories import incoming, record

DAY = timedelta(days=1)
#: Daily partitions from this many days back through today; older rows go to the default.
DAYS_BACK = 10
LEASE = timedelta(minutes=5)
ONE_TRY = RetryPolicy(max_attempts=1, jitter=0)
THREE_TRIES = RetryPolicy(base_seconds=10, max_delay_seconds=100, max_attempts=3, jitter=0)


@pytest.fixture(scope="session")
def partitioned_url() -> Iterator[str]:
    """A migrated Postgres database of its own for the purge-by-partition tests."""
    with own_postgres_database("outbox_test_retention") as url:
        yield url


@pytest.fixture
def database_url(partitioned_url: str) -> str:
    """The database emptied, with daily partitions from DAYS_BACK days ago through today
    (and those ahead that the migration made)."""
    engine = make_engine(partitioned_url, pool_size=1)
    try:
        reset_partitions(engine)
    finally:
        engine.dispose()
    return partitioned_url


def reset_partitions(engine: Engine) -> None:
    today = interval_start(utcnow(), DAY)
    with engine.begin() as conn:
        tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        for name, _ in conn.execute(text(DETACHED_PARTITIONS)).all():
            conn.execute(text(f"DROP TABLE {name}"))
        for p in list_partitions(conn):
            if not p.default and (p.upper is not None and p.upper <= today + DAY):
                conn.execute(text(f"ALTER TABLE {PARENT} DETACH PARTITION {p.name}"))
                conn.execute(text(f"DROP TABLE {p.name}"))
        for k in range(DAYS_BACK, -1, -1):
            create_partition(conn, today - k * DAY, today - (k - 1) * DAY, DAY)


def day_ago(days: int, hours: int = 12) -> datetime:
    """A moment `days` days back, `hours` into that UTC day."""
    return interval_start(utcnow(), DAY) - days * DAY + timedelta(hours=hours)


def partition_name_of(moment: datetime) -> str:
    """The daily partition that holds `moment`."""
    return partition_name(interval_start(moment, DAY), DAY)


def stored(engine: Engine, at: datetime, delivery_id: str | None = None) -> int:
    [result] = record(engine, incoming(delivery_id), now=at)
    return result.id


def claimed(sessions: sessionmaker[Session], event_id: int, at: datetime):  # type: ignore[no-untyped-def]
    with transaction(sessions) as session:
        [event] = claiming.claim(session, now=at, lease=LEASE, ids=[event_id])
    return event


def done(sessions: sessionmaker[Session], event_id: int, at: datetime) -> None:
    event = claimed(sessions, event_id, at)
    with transaction(sessions) as session:
        assert finishing.mark_done(session, event, at)


def failed(
    sessions: sessionmaker[Session], event_id: int, at: datetime, policy: RetryPolicy = ONE_TRY
) -> None:
    """One failed attempt: dead under ONE_TRY, back to pending under THREE_TRIES."""
    event = claimed(sessions, event_id, at)
    with transaction(sessions) as session:
        finishing.fail(session, event, "boom", policy=policy, now=at)


def finished_rows(engine: Engine, at: datetime, count: int) -> list[int]:
    """`count` rows received at `at` and done."""
    ids = [r.id for r in record(engine, *(incoming() for _ in range(count)), now=at)]
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE webhook_events SET status = 'done', next_attempt_at = NULL,"
                " processed_at = received_at WHERE id = ANY(:ids)"
            ),
            {"ids": ids},
        )
    return ids


def partition_names(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return [p.name for p in list_partitions(conn)]


def table_of(engine: Engine, event_id: int) -> str | None:
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT tableoid::regclass::text FROM webhook_events WHERE id = :id"),
            {"id": event_id},
        ).scalar()


def failures_of(engine: Engine, event_id: int) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                text("SELECT count(*) FROM webhook_event_failures WHERE event_id = :id"),
                {"id": event_id},
            ).scalar_one()
        )


def analyse(engine: Engine) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE webhook_events"))
