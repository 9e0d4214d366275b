"""The reads of events over time (outbox/event_history.py), on SQLite and Postgres."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from outbox.db import utcnow
from outbox.driver.dbapi import Connection
from outbox.event_history import events_per_minute, object_timeline
from tests.cli.conftest import finish, stored


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
