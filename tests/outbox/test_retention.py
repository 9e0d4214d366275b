"""Retention by whole partitions (Postgres): the partitions entirely older than the cut-off
go, their unfinished rows are kept and stay workable, each delivery stays known."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import text

from outbox import claiming, finishing, operator_writes, store
from outbox.db import transaction, utcnow
from outbox.partitions import DEFAULT_PARTITION, LEGACY_PARTITION, PARENT, interval_start
from outbox.retention import RemovedPartition, Retention, detach_partition, purge_by_partitions
from tests.factories import incoming, record
from tests.outbox.retention_support import (
    DAY,
    DAYS_BACK,
    LEASE,
    THREE_TRIES,
    analyse,
    claimed,
    database_url,  # noqa: F401 -- the fixture: a database of daily partitions
    day_ago,
    done,
    failed,
    failures_of,
    finished_rows,
    partition_name_of,
    partition_names,
    partitioned_url,  # noqa: F401
    stored,
    table_of,
)

pytestmark = pytest.mark.postgres


def purge(engine, days: int, batch: int = 1000) -> Retention:
    """Purge with the cut-off at the start of the UTC day `days` days back."""
    cutoff = interval_start(utcnow(), DAY) - days * DAY
    return purge_by_partitions(engine, cutoff, batch=batch)


def with_rows(purged: Retention) -> list[RemovedPartition]:
    """The partitions removed that held rows (the empty ones of the days before go too)."""
    return [p for p in purged.partitions if p.rows or p.moved]


def test_a_purge_removes_only_the_partitions_entirely_older_than_the_cutoff(engine):
    finished_rows(engine, day_ago(5), 3)
    finished_rows(engine, day_ago(4), 2)
    young = finished_rows(engine, day_ago(3), 2)
    before = partition_names(engine)
    purged = purge(engine, 3)  # the cut-off is where day 3 starts: days 10 to 4 go
    by_name = {p.name: p.rows for p in purged.partitions}
    assert list(by_name) == [partition_name_of(day_ago(days)) for days in range(DAYS_BACK, 3, -1)]
    assert by_name[partition_name_of(day_ago(5))] == 3
    assert by_name[partition_name_of(day_ago(4))] == 2 and purged.rows == 5
    gone = {p.name for p in purged.partitions}
    assert partition_names(engine) == [n for n in before if n not in gone]
    assert all(table_of(engine, event_id) is not None for event_id in young)
    # Halfway into day 3: its partition holds younger rows too, so it stays whole.
    cutoff = interval_start(utcnow(), DAY) - 3 * DAY + DAY / 2
    assert purge_by_partitions(engine, cutoff, batch=1000).partitions == []


def test_unfinished_rows_are_moved_with_their_ids_and_stay_claimable_finishable_replayable(
    engine, sessions
):
    at = day_ago(5)
    pending = stored(engine, at)
    processing = stored(engine, at)
    lease = claimed(sessions, processing, utcnow())  # a worker is in the middle of it
    dead = stored(engine, at)
    failed(sessions, dead, at)
    finished_rows(engine, at, 2)
    purged = purge(engine, 3)
    [removed] = with_rows(purged)
    assert removed.moved == {"pending": 1, "processing": 1, "dead": 1} and removed.rows == 2
    for event_id in (pending, processing, dead):
        assert table_of(engine, event_id) == DEFAULT_PARTITION
    with transaction(sessions) as session:  # its worker's finishing statement finds it
        assert finishing.mark_done(session, lease, utcnow())
    with transaction(sessions) as session:
        [claim] = claiming.claim(session, now=utcnow(), lease=LEASE, ids=[pending])
        assert finishing.mark_done(session, claim, utcnow())
    with transaction(sessions) as session:
        assert operator_writes.replay(session, [dead], now=utcnow()) == [dead]
    with engine.connect() as conn:
        statuses = dict(
            conn.execute(
                text("SELECT id, status FROM webhook_events WHERE id = ANY(:ids)"),
                {"ids": [pending, processing, dead]},
            ).all()
        )
    assert statuses == {pending: "done", processing: "done", dead: "pending"}


def test_a_moved_row_keeps_its_lease_and_every_column(engine, sessions):
    processing = stored(engine, day_ago(6), "evt_in_hand")
    claimed(sessions, processing, utcnow())
    columns = "SELECT * FROM webhook_events WHERE id = :id"
    with engine.connect() as conn:
        before = conn.execute(text(columns), {"id": processing}).one()
    purge(engine, 3)
    with engine.connect() as conn:
        after = conn.execute(text(columns), {"id": processing}).one()
    assert after == before and after.lease_owner is not None


def test_the_failures_of_removed_rows_go_and_those_of_kept_rows_stay(engine, sessions):
    at = day_ago(5)
    retried = stored(engine, at)
    failed(sessions, retried, at, THREE_TRIES)  # a failure, then done
    with engine.begin() as conn:
        conn.execute(text("UPDATE webhook_events SET next_attempt_at = :at"), {"at": at})
    done(sessions, retried, at)
    dead = stored(engine, at)
    failed(sessions, dead, at)
    young = stored(engine, day_ago(1))
    failed(sessions, young, day_ago(1), THREE_TRIES)
    assert (failures_of(engine, retried), failures_of(engine, dead)) == (1, 1)
    [removed] = with_rows(purge(engine, 3))
    assert removed.failures == 1
    assert failures_of(engine, retried) == 0
    assert failures_of(engine, dead) == 1 and failures_of(engine, young) == 1


def test_a_late_duplicate_of_a_purged_delivery_is_answered_as_a_duplicate(engine):
    [first] = record(engine, incoming("evt_gone_long_ago"), now=day_ago(5))
    with engine.begin() as conn:
        conn.execute(text("UPDATE webhook_events SET status = 'done', next_attempt_at = NULL"))
    purge(engine, 3)
    assert table_of(engine, first.id) is None
    with engine.begin() as conn:
        [again] = store.record(conn, [incoming("evt_gone_long_ago")], utcnow())
    assert (again.id, again.duplicate, again.status) == (first.id, True, store.PURGED)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT count(*) FROM webhook_events")).scalar_one()
    assert rows == 0


def test_a_purge_stopped_between_detach_and_drop_is_finished_by_the_next(engine, sessions):
    at = day_ago(5)
    finished_rows(engine, at, 3)
    retried = stored(engine, at)
    failed(sessions, retried, at, THREE_TRIES)
    with engine.begin() as conn:
        conn.execute(text("UPDATE webhook_events SET status = 'done' WHERE id = :id"),
                     {"id": retried})  # fmt: skip
    kept = stored(engine, at)
    name = partition_name_of(at)
    with engine.connect() as conn:
        assert detach_partition(conn, name) == {"pending": 1}  # ... and the process died
    assert name not in partition_names(engine)
    assert table_of(engine, kept) == DEFAULT_PARTITION
    purged = purge(engine, 3)
    [leftover] = purged.leftovers
    assert (leftover.name, leftover.rows, leftover.failures) == (name, 4, 1)
    assert with_rows(purged) == [] and failures_of(engine, retried) == 0
    with engine.connect() as conn:
        assert conn.execute(text("SELECT to_regclass(:t)"), {"t": name}).scalar() is None


def test_two_purges_at_once_neither_fails_nor_counts_twice(engine):
    for days in (7, 6, 5, 4):
        finished_rows(engine, day_ago(days), 5)
    start = threading.Barrier(2)
    outcomes: list[Retention] = []
    errors: list[BaseException] = []

    def run() -> None:
        start.wait()
        try:
            outcomes.append(purge(engine, 3))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(len(o.partitions) for o in outcomes) == [0, DAYS_BACK - 3]
    assert sum(o.rows for o in outcomes) == 20


def test_a_purge_waits_out_a_lock_on_the_parent_and_succeeds(engine):
    finished_rows(engine, day_ago(5), 2)
    holding = threading.Event()

    def hold() -> None:
        with engine.begin() as conn:
            conn.execute(text(f"LOCK TABLE {PARENT} IN ACCESS SHARE MODE"))
            holding.set()
            time.sleep(0.6)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait()
    started = time.perf_counter()
    purged = purge(engine, 3)
    waited = time.perf_counter() - started
    holder.join()
    assert [p.rows for p in with_rows(purged)] == [2]
    assert waited >= 0.4  # it gave way to the lock, then took it


def test_old_finished_rows_of_the_default_partition_go_in_batches_deliveries_kept(engine):
    older = day_ago(30)  # before the oldest partition: in the default
    gone = finished_rows(engine, older, 5)
    pending = stored(engine, older)
    assert table_of(engine, pending) == DEFAULT_PARTITION
    purged = purge(engine, 3, batch=2)
    assert purged.default_rows == 5
    assert all(table_of(engine, event_id) is None for event_id in gone)
    assert table_of(engine, pending) == DEFAULT_PARTITION
    with engine.connect() as conn:
        known = conn.execute(text("SELECT count(*) FROM webhook_deliveries")).scalar_one()
    assert known == 6


def test_the_preview_estimates_partition_rows_and_counts_unfinished_rows_exactly(engine, reads):
    from outbox import queries

    finished_rows(engine, day_ago(5), 4)
    stored(engine, day_ago(5))
    finished_rows(engine, day_ago(1), 3)
    analyse(engine)
    cutoff = interval_start(utcnow(), DAY) - 3 * DAY
    preview = queries.purge_preview(reads, older_than=cutoff)
    assert preview.by_partitions
    by_name = {p.name: p for p in preview.partitions}
    assert list(by_name) == [partition_name_of(day_ago(days)) for days in range(DAYS_BACK, 3, -1)]
    partition = by_name[partition_name_of(day_ago(5))]
    assert partition.estimated_rows == 5 and partition.unfinished == {"pending": 1}
    assert (preview.purgeable, preview.unfinished_older) == (4, 1)
    assert partition.name in partition_names(engine)


def test_the_unfinished_rows_of_a_detached_partition_are_found_through_its_partial_indexes(
    engine,
):
    from outbox.retention import _move_statement

    finished_rows(engine, day_ago(5), 200)
    analyse(engine)
    name = partition_name_of(day_ago(5))
    with engine.begin() as conn:
        conn.execute(text(f"ALTER TABLE {PARENT} DETACH PARTITION {name}"))
        partial = dict(
            conn.execute(
                text(
                    "SELECT pg_get_expr(indpred, indrelid), indexrelid::regclass::text"
                    " FROM pg_index WHERE indrelid = to_regclass(:t) AND indpred IS NOT NULL"
                ),
                {"t": name},
            ).all()
        )
        conn.execute(text("SET LOCAL enable_seqscan = off"))
        explained = conn.execute(text("EXPLAIN " + _move_statement(f'"{name}"'))).scalars()
        plan = "\n".join(explained)
        conn.rollback()
    assert "Seq Scan" not in plan
    for status in ("pending", "processing", "dead"):
        [index] = [
            i
            for predicate, i in partial.items()
            if predicate == f"((status)::text = '{status}'::text)"
        ]
        assert f"Index Scan using {index} on {name}" in plan, plan


def test_the_legacy_partition_goes_by_its_upper_bound_like_any_other(engine, sessions):
    cutover = interval_start(day_ago(7), DAY)
    with engine.begin() as conn:
        for days in range(DAYS_BACK, 7, -1):
            name = partition_name_of(day_ago(days))
            conn.execute(text(f"ALTER TABLE {PARENT} DETACH PARTITION {name}"))
            conn.execute(text(f"DROP TABLE {name}"))
        conn.execute(
            text(
                f"CREATE TABLE {LEGACY_PARTITION} PARTITION OF {PARENT}"
                f" FOR VALUES FROM (MINVALUE) TO ('{cutover.isoformat()}')"
            )
        )
    finished_rows(engine, day_ago(40), 3)
    pending = stored(engine, day_ago(40))
    assert table_of(engine, pending) == LEGACY_PARTITION
    purged = purge(engine, 3)
    assert purged.partitions[0].name == LEGACY_PARTITION
    assert (purged.partitions[0].rows, purged.partitions[0].moved) == (3, {"pending": 1})
    assert table_of(engine, pending) == DEFAULT_PARTITION


def test_a_table_detached_by_hand_with_unfinished_rows_loses_none_of_them(engine, sessions):
    finished_rows(engine, day_ago(5), 2)
    dead = stored(engine, day_ago(5))
    failed(sessions, dead, day_ago(5))
    name = partition_name_of(day_ago(5))
    with engine.begin() as conn:
        conn.execute(text(f"ALTER TABLE {PARENT} DETACH PARTITION {name}"))
    [leftover] = purge(engine, 3).leftovers
    assert (leftover.name, leftover.rows, leftover.moved) == (name, 2, {"dead": 1})
    assert table_of(engine, dead) == DEFAULT_PARTITION and failures_of(engine, dead) == 1
