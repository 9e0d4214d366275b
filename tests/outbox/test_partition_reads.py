"""The operators' reads on a partitioned webhook_events (Postgres): a listing walks the
partitions newest first and keeps the order of ids, a row is found in the partition that
holds it, a delivery id through the delivery index, and the stats say what is estimated."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from outbox import queries
from outbox.partitions import ensure_partitions
from outbox.queries import EventFilter
from outbox.query_results import EventNotFound
from tests.cli.conftest import finish, stored

on_postgres = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)

DAY = timedelta(days=1)
#: Days of their own, past the migration's cutover (the legacy partition holds every
#: time before it): partitions made here stay for the session, and no other test's rows
#: are received a month ahead.
FIRST_DAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + 30 * DAY


def three_days_of_partitions(engine) -> None:
    with engine.connect() as conn:
        ensure_partitions(conn, FIRST_DAY, DAY, 2)


def tables_of(engine, ids: list[int]) -> set[str]:
    with engine.connect() as conn:
        found = conn.execute(
            text("SELECT tableoid::regclass::text FROM webhook_events WHERE id = ANY(:ids)"),
            {"ids": ids},
        )
        return set(found.scalars())


def two_rows_a_day(engine) -> list[int]:
    return [
        stored(engine, now=FIRST_DAY + day * DAY + timedelta(hours=hour))
        for day in range(3)
        for hour in (1, 2)
    ]


@on_postgres
def test_a_listing_walks_the_partitions_newest_first_and_keeps_the_order_of_ids(engine, reads):
    three_days_of_partitions(engine)
    made = two_rows_a_day(engine)
    # received a moment before the second day began, stored last: the highest id, in the
    # first day's partition
    late = stored(engine, now=FIRST_DAY + DAY - timedelta(milliseconds=1))
    assert len(tables_of(engine, made)) == 3 and tables_of(engine, [late, made[0]]) == {
        f"webhook_events_p{FIRST_DAY:%Y%m%d}"
    }
    page = queries.list_page(reads, EventFilter(), limit=3)
    assert [s.id for s in page.rows] == [late, made[5], made[4]] and page.complete
    after = queries.list_page(reads, EventFilter(), limit=3, before_id=made[4])
    assert [s.id for s in after.rows] == [made[3], made[2], made[1]]
    by_offset = queries.list_events(reads, EventFilter(), limit=2, offset=5)
    assert [s.id for s in by_offset] == [made[1], made[0]]
    until = EventFilter(until=FIRST_DAY + DAY)
    assert [s.id for s in queries.list_events(reads, until, limit=5)] == [late, made[1], made[0]]


@on_postgres
def test_a_listing_that_runs_out_of_time_answers_what_it_found_and_says_so(engine, reads):
    three_days_of_partitions(engine)
    oldest = stored(engine, now=FIRST_DAY, event_type="rare.type")
    two_rows_a_day(engine)
    rare = EventFilter(event_type="rare.*")
    cut_short = queries.list_page(reads, rare, limit=5, budget=timedelta(0))
    assert not cut_short.complete and cut_short.rows == []
    whole = queries.list_page(reads, rare, limit=5, budget=timedelta(seconds=30))
    assert whole.complete and [s.id for s in whole.rows] == [oldest]


@on_postgres
def test_a_row_is_found_by_id_in_whichever_partition_holds_it(engine, reads):
    three_days_of_partitions(engine)
    made = two_rows_a_day(engine)
    young = stored(engine)  # in the partition of today
    assert len(tables_of(engine, [*made, young])) == 4
    for event_id in [*made, young]:
        assert queries.find_event(reads, str(event_id)).summary.id == event_id
    with pytest.raises(EventNotFound):
        queries.find_event(reads, str(young + 1000))


@on_postgres
def test_a_delivery_id_is_read_through_the_delivery_index_and_a_purged_one_named(engine, reads):
    three_days_of_partitions(engine)
    kept = stored(engine, delivery_id="evt_kept", now=FIRST_DAY + timedelta(hours=3))
    assert queries.find_event(reads, "evt_kept").summary.id == kept
    assert [
        s.id for s in queries.list_events(reads, EventFilter(delivery_id="evt_kept"), limit=5)
    ] == [kept]
    with engine.begin() as conn:  # what a dropped partition leaves: the delivery alone
        conn.execute(
            text(
                "INSERT INTO webhook_deliveries (source, delivery_id, event_id, received_at)"
                " VALUES ('stripe', 'evt_gone', 123456789, :at)"
            ),
            {"at": FIRST_DAY},
        )
    with pytest.raises(EventNotFound, match=r"was stored as event 123456789 .*purged"):
        queries.find_event(reads, "evt_gone")
    assert queries.list_events(reads, EventFilter(delivery_id="evt_gone"), limit=5) == []


@on_postgres
def test_the_stats_of_a_large_partitioned_table_name_its_partitions(engine, sessions, reads):
    three_days_of_partitions(engine)
    for event_id in two_rows_a_day(engine):
        finish(sessions, event_id, at=FIRST_DAY + 3 * DAY)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE webhook_events"))
    result = queries.event_stats(reads, now=datetime.now(UTC), exact_below=0)
    assert result.finished_estimate == 6 and result.counts == {}
    assert result.partitions >= 3
