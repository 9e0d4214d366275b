"""The reads of events over time (outbox/event_history.py), on SQLite and Postgres."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from outbox.db import make_engine, utcnow
from outbox.driver.dbapi import Connection
from outbox.event_history import PER_MINUTE, events_per_minute, object_timeline
from outbox.partitions import LEGACY_PARTITION, ensure_partitions, list_partitions
from tests.cli.conftest import finish, stored
from tests.conftest import own_postgres_database

DAY = timedelta(days=1)


def test_events_per_minute_counts_each_minute_by_status_now(
    engine: Engine, sessions: sessionmaker[Session], reads: Connection
) -> None:
    now = utcnow().replace(second=30, microsecond=0)
    done = stored(engine, now=now - timedelta(minutes=2))
    finish(sessions, done)
    stored(engine, now=now - timedelta(minutes=2, seconds=10))
    stored(engine, now=now)
    stored(engine, now=now - timedelta(hours=5))  # before `since`
    counts = events_per_minute(reads, since=now - timedelta(hours=1))
    minute = (now - timedelta(minutes=2)).replace(second=0)
    assert [(c.minute, c.status, c.count) for c in counts] == [
        (minute, "done", 1),
        (minute, "pending", 1),
        (now.replace(second=0), "pending", 1),
    ]


def test_an_objects_timeline_is_in_the_order_its_events_were_created(
    engine: Engine, reads: Connection
) -> None:
    now = utcnow()
    late = stored(engine, object_id="sub_1", created=now - timedelta(minutes=1))
    early = stored(engine, object_id="sub_1", created=now - timedelta(minutes=9))
    unknown = stored(engine, object_id="sub_1")  # no provider time: when it was received
    stored(engine, object_id="sub_2")
    stored(engine, object_id="sub_1", source="github")
    timeline = object_timeline(reads, "stripe", "sub_1")
    assert [entry.event.id for entry in timeline] == [early, late, unknown]
    newest_two = object_timeline(reads, "stripe", "sub_1", limit=2)  # by id, then in order
    assert [entry.event.id for entry in newest_two] == [early, unknown]


@pytest.fixture
def days_of_partitions() -> Iterator[Engine]:
    """A Postgres database at the head whose webhook_events has a partition for each of the
    last six days (the empty legacy partition gone) and those ahead."""
    with own_postgres_database("outbox_history") as url:
        engine = make_engine(url)
        try:
            with engine.begin() as conn:
                conn.execute(
                    text(f"ALTER TABLE webhook_events DETACH PARTITION {LEGACY_PARTITION}")
                )
                conn.execute(text(f"DROP TABLE {LEGACY_PARTITION}"))
            with engine.connect() as conn:
                ensure_partitions(conn, utcnow() - 6 * DAY, DAY, 9)
            yield engine
        finally:
            engine.dispose()


@pytest.mark.postgres
def test_the_per_minute_counts_read_only_the_partitions_since_the_moment(days_of_partitions):
    engine, now = days_of_partitions, utcnow()
    for age in (5 * DAY, 2 * DAY, timedelta(hours=1)):
        stored(engine, now=now - age)
    since = now - timedelta(hours=3)
    with engine.connect() as conn:
        wanted = {
            p.name for p in list_partitions(conn) if p.default or p.upper is None or p.upper > since
        }
        plan = conn.execute(text(f"EXPLAIN {PER_MINUTE['postgresql']}"), {"since": since})
        lines = list(plan.scalars())
    scanned = {line.split(" on ")[1].split()[0] for line in lines if " on webhook_events_" in line}
    assert scanned == wanted, lines
    assert len(wanted) < len(list_partitions_of(engine))


def list_partitions_of(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return [p.name for p in list_partitions(conn)]
