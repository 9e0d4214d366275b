"""The partitions of webhook_events on Postgres: each delivery stored once across them, a
very late duplicate known after its partition is gone, partitions made ahead and late."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta

import psycopg
import pytest
from sqlalchemy import create_engine, text

from outbox import store
from outbox.db import make_engine, utcnow
from outbox.partitions import (
    DEFAULT_PARTITION,
    ensure_partitions,
    interval_start,
    list_partitions,
    partition_name,
)
from tests.factories import incoming, record

on_postgres = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)

DAY = timedelta(days=1)

#: The parent's indexes that a partition's indexes are attached to.
INDEXES_OF = text(
    "SELECT parent.relname FROM pg_index x"
    " JOIN pg_inherits i ON i.inhrelid = x.indexrelid"
    " JOIN pg_class parent ON parent.oid = i.inhparent WHERE x.indrelid = to_regclass(:table)"
)
PARENT_INDEXES = {
    "webhook_events_pkey",
    "ix_webhook_events_due",
    "ix_webhook_events_lease",
    "ix_webhook_events_in_line",
    "ix_webhook_events_dead",
    "ix_webhook_events_received_at",
    "ix_webhook_events_account",
    "ix_webhook_events_object",
}


def table_of(engine, event_id: int) -> str:
    """The partition that holds a row."""
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT tableoid::regclass::text FROM webhook_events WHERE id = :id"),
            {"id": event_id},
        ).scalar_one()


def ensure(engine, now, ahead: int = 0) -> list[str]:
    with engine.connect() as conn:
        return ensure_partitions(conn, now, DAY, ahead)


def drop_partition_of(engine, moment) -> None:
    name = partition_name(interval_start(moment, DAY), DAY)
    with engine.begin() as conn:
        conn.execute(text(f"ALTER TABLE webhook_events DETACH PARTITION {name}"))
        conn.execute(text(f"DROP TABLE {name}"))


@on_postgres
def test_a_duplicate_is_answered_as_a_duplicate_whichever_partition_holds_the_first(engine):
    now = utcnow()
    later = now + 2 * DAY  # a partition made ahead, not the one holding now
    [first] = record(engine, incoming("evt_across"), now=now)
    [again] = record(engine, incoming("evt_across"), now=later)
    [first_later] = record(engine, incoming("evt_across_back"), now=later)
    [again_back] = record(engine, incoming("evt_across_back"), now=now)
    assert table_of(engine, first.id) != table_of(engine, first_later.id)
    assert (again.id, again.duplicate, again.status) == (first.id, True, "pending")
    assert (again_back.id, again_back.duplicate) == (first_later.id, True)
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT count(*) FROM webhook_events")).scalar_one()
    assert stored == 2


@on_postgres
def test_concurrent_duplicates_from_two_connections_store_one_row(engine):
    """Two transactions store one delivery at once, with times in different partitions:
    the second waits on the delivery index for the first and is answered a duplicate."""
    start = threading.Barrier(2)
    answers: list[store.Recorded] = []
    now = utcnow()

    def store_at(moment) -> None:
        with engine.begin() as conn:
            conn.execute(text("SELECT 1"))  # its own connection and transaction first
            start.wait()
            answers.extend(store.record(conn, [incoming("evt_race")], moment))

    threads = [threading.Thread(target=store_at, args=(now + k * DAY,)) for k in (0, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(a.duplicate for a in answers) == [False, True]
    assert len({a.id for a in answers}) == 1
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT count(*) FROM webhook_events")).scalar_one()
        entries = conn.execute(text("SELECT count(*) FROM webhook_deliveries")).scalar_one()
    assert (rows, entries) == (1, 1)


@on_postgres
def test_a_very_late_duplicate_after_its_partition_was_dropped_is_still_a_duplicate(engine):
    received = utcnow() + 400 * DAY
    ensure(engine, received)
    [first] = record(engine, incoming("evt_long_ago"), now=received)
    drop_partition_of(engine, received)
    [again] = record(engine, incoming("evt_long_ago"), now=utcnow())
    assert (again.id, again.duplicate, again.status) == (first.id, True, store.PURGED)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM webhook_events")).scalar_one() == 0


@on_postgres
def test_the_ingress_path_answers_a_delivery_whose_partition_was_dropped_as_purged(engine):
    received = utcnow() + 410 * DAY
    ensure(engine, received)
    [first] = record(engine, incoming("evt_gone"), now=received)
    drop_partition_of(engine, received)
    dsn = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)

    async def again() -> list[store.Recorded]:
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            items = [incoming("evt_gone"), incoming("evt_new_beside")]
            return await store.record_async(conn, items, utcnow())

    gone, new = asyncio.run(again())
    assert (gone.id, gone.duplicate, gone.status) == (first.id, True, store.PURGED)
    assert not new.duplicate and new.id > first.id


@on_postgres
def test_an_insert_whose_partition_is_missing_lands_in_the_default_and_a_later_ensure_moves_it(
    engine,
):
    received = utcnow() + 500 * DAY
    [stray] = record(engine, incoming("evt_early_for_its_partition"), now=received)
    assert table_of(engine, stray.id) == DEFAULT_PARTITION
    created = ensure(engine, received)
    name = partition_name(interval_start(received, DAY), DAY)
    assert created == [name]
    assert table_of(engine, stray.id) == name
    with engine.connect() as conn:
        indexes = set(conn.execute(INDEXES_OF, {"table": name}).scalars())
    assert indexes == PARENT_INDEXES  # the attach built those the LIKE did not copy
    [again] = record(engine, incoming("evt_early_for_its_partition"), now=utcnow())
    assert (again.id, again.duplicate, again.status) == (stray.id, True, "pending")


@on_postgres
def test_ensure_makes_the_partitions_ahead_once(engine):
    now = utcnow() + 600 * DAY
    created = ensure(engine, now, ahead=3)
    start = interval_start(now, DAY)
    assert created == [partition_name(start + k * DAY, DAY) for k in range(4)]
    assert ensure(engine, now, ahead=3) == []
    bounds = {p.name: (p.lower, p.upper) for p in _partitions(engine)}
    assert bounds[created[1]] == (start + DAY, start + 2 * DAY)


@on_postgres
def test_ensure_from_two_connections_at_once_makes_each_partition_once(engine):
    now = utcnow() + 700 * DAY
    start = threading.Barrier(2)
    made: list[list[str]] = []
    errors: list[BaseException] = []

    def upkeep() -> None:
        other = make_engine(str(engine.url.render_as_string(hide_password=False)), pool_size=1)
        try:
            with other.connect() as conn:
                start.wait()
                made.append(ensure_partitions(conn, now, DAY, 5))
        except BaseException as exc:
            errors.append(exc)
        finally:
            other.dispose()

    threads = [threading.Thread(target=upkeep) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    first = interval_start(now, DAY)
    assert sorted(made[0] + made[1]) == [partition_name(first + k * DAY, DAY) for k in range(6)]


@on_postgres
def test_the_default_partition_is_listed_last_without_bounds(engine):
    partitions = _partitions(engine)
    assert partitions[-1].name == DEFAULT_PARTITION and partitions[-1].default
    assert (partitions[-1].lower, partitions[-1].upper) == (None, None)
    assert partitions[0].lower is None  # the single table of before: MINVALUE up to its cutover


def _partitions(engine):
    with engine.connect() as conn:
        return list_partitions(conn)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_ensure_has_nothing_to_do_on_sqlite(database_url):
    engine = create_engine(database_url)
    try:
        assert ensure(engine, utcnow()) == []
        assert _partitions(engine) == []
    finally:
        engine.dispose()
