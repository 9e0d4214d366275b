"""The operators' named reads, on SQLite and on Postgres: the same rows, typed the same."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import text

from outbox import claiming, finishing, operator_writes, queries
from outbox.db import transaction
from outbox.driver.dbapi import of_session
from outbox.models import Source
from outbox.queries import EventFilter
from outbox.query_results import AmbiguousEvent, EventNotFound
from outbox.retry import RetryPolicy
from tests.cli.conftest import LEASE, claim_now, finish, kill, purged_event, skip, stored
from tests.factories import incoming, record

NOW = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def test_a_summary_reads_back_what_was_stored_with_aware_utc_times(engine, sessions, reads):
    [stored_row] = record(
        engine,
        replace(incoming("evt_typed"), account_id=2**40, livemode=True, object_id="sub_1"),
        now=NOW,
    )
    kill(sessions, stored_row.id, "first line\nsecond line", at=NOW + timedelta(seconds=1))
    [summary] = queries.list_events(reads, EventFilter(), limit=10)
    assert summary.id == stored_row.id and summary.delivery_id == "evt_typed"
    assert summary.received_at == NOW and summary.received_at.tzinfo == UTC
    assert summary.processed_at == NOW + timedelta(seconds=1)
    assert summary.next_attempt_at is None and summary.purged_at is None
    assert (summary.account_id, summary.livemode, summary.backfilled) == (2**40, True, False)
    assert (summary.status, summary.attempts) == ("dead", 1)
    assert summary.last_error == "first line\nsecond line"


def test_each_filter_narrows_the_listing_and_they_combine(engine, sessions, reads):
    old = stored(engine, now=NOW - timedelta(days=2), event_type="invoice.paid")
    github = stored(engine, now=NOW, source=Source.GITHUB, event_type="push")
    [account] = record(engine, replace(incoming("evt_acct"), account_id=7), now=NOW)
    dead = stored(engine, now=NOW, event_type="invoice_paid")
    kill(sessions, dead)

    def ids(**where):
        return [s.id for s in queries.list_events(reads, EventFilter(**where), limit=50)]

    assert ids() == [dead, account.id, github, old]
    assert ids(statuses=("dead",)) == [dead]
    assert ids(statuses=("dead", "pending"), sources=("stripe",)) == [dead, account.id, old]
    assert ids(sources=("github",)) == [github]
    assert ids(event_type="invoice.*") == [old]  # `_` is no wildcard
    assert ids(event_type="invoice_*") == [dead]
    assert ids(account_id=7) == [account.id]
    assert ids(since=NOW - timedelta(days=1)) == [dead, account.id, github]
    assert ids(until=NOW - timedelta(days=1)) == [old]
    assert ids(until=NOW) == [old]  # strictly before
    assert ids(delivery_id="evt_acct") == [account.id]
    assert ids(sources=("github",), statuses=("dead",)) == []


def test_pages_by_id_or_offset_and_ranges_of_ids(engine, reads):
    made = [stored(engine) for _ in range(5)]
    everything = EventFilter()
    page = queries.list_events(reads, everything, limit=2, before_id=made[3])
    assert [s.id for s in page] == [made[2], made[1]]
    assert [s.id for s in queries.list_events(reads, everything, limit=2, offset=4)] == [made[0]]
    after = queries.events_after(reads, everything, after_id=made[0], up_to_id=made[3], limit=10)
    assert [s.id for s in after] == made[1:4]
    assert queries.newest_id(reads) == made[-1]
    assert {s.id for s in queries.summaries_of(reads, [made[1], made[4], 10**12])} == {
        made[1],
        made[4],
    }
    assert queries.summaries_of(reads, []) == []
    assert queries.matching_ids(reads, everything, limit=3) == made[:3]
    assert queries.matching_ids(reads, everything) == made


def test_the_settled_id_is_the_highest_received_before_a_moment(engine, reads):
    assert queries.settled_id(reads, NOW) == 0
    early = stored(engine, now=NOW - timedelta(seconds=10))
    stored(engine, now=NOW)
    assert queries.settled_id(reads, NOW) == early


def test_one_event_is_found_by_id_or_delivery_id_with_its_failures(engine, sessions, reads):
    event_id = stored(engine, delivery_id="evt_found", now=NOW)
    with transaction(sessions) as session:
        [claimed] = claiming.claim(session, now=NOW, lease=LEASE, ids=[event_id])
        finishing.fail(session, claimed, "boom", policy=RetryPolicy(jitter=0), now=NOW)
    by_id = queries.find_event(reads, f" {event_id} ")
    by_delivery = queries.find_event(reads, "evt_found")
    assert by_id == by_delivery
    assert by_id.raw_body == b'{"id": "evt_found", "type": "test.event"}'
    assert by_id.headers == {"content-type": "application/json"}
    assert by_id.verified_by == "stripe#0"
    [failure] = by_id.failures
    assert (failure.attempt, failure.outcome, failure.error) == (1, "retry", "boom")
    assert failure.failed_at == NOW


def test_a_delivery_id_of_two_sources_is_ambiguous_and_an_unknown_one_not_found(engine, reads):
    a = stored(engine, delivery_id="shared", source=Source.STRIPE)
    b = stored(engine, delivery_id="shared", source=Source.GITHUB)
    with pytest.raises(AmbiguousEvent) as ambiguous:
        queries.find_event(reads, "shared")
    assert ambiguous.value.ids == [a, b]
    with pytest.raises(EventNotFound):
        queries.find_event(reads, "99999999")  # digits that are no id: a delivery id


def test_replay_verdicts_follow_the_store_s_guard(engine, sessions, reads):
    pending = stored(engine)
    processing = stored(engine)
    claim_now(sessions, processing)
    done = stored(engine)
    finish(sessions, done)
    skipped = stored(engine)
    skip(sessions, skipped)
    tombstone = purged_event(engine, sessions)
    verdicts = queries.replay_verdicts(reads, [tombstone, done, pending, processing, skipped, 0])
    by_id = {v.id: v for v in verdicts}
    assert [v.id for v in verdicts] == [tombstone, done, pending, processing, skipped, 0]
    assert by_id[done].replayable and by_id[skipped].replayable
    assert "retry` makes it due now" in by_id[pending].refusal
    assert by_id[processing].refusal.startswith("still processing")
    assert by_id[tombstone].refusal.startswith("purged (")
    assert by_id[0].refusal == "no such event"
    with transaction(sessions) as session:
        put_back = operator_writes.replay(session, [v.id for v in verdicts], now=datetime.now(UTC))
    assert put_back == sorted(v.id for v in verdicts if v.replayable)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # partitions: test_retention
def test_purge_preview_counts_what_purge_removes(engine, sessions, reads):
    cutoff = datetime.now(UTC) - timedelta(days=1)
    old_done = stored(engine, now=cutoff - timedelta(days=1))
    finish(sessions, old_done)
    stored(engine, now=cutoff - timedelta(days=1))  # old but pending: left alone
    stored(engine)  # young
    purged_event(engine, sessions)  # already a tombstone
    preview = queries.purge_preview(reads, older_than=cutoff)
    assert (preview.purgeable, preview.unfinished_older) == (1, 1)
    with transaction(sessions) as session:
        assert operator_writes.purge(session, older_than=cutoff, now=datetime.now(UTC)) == 1


def test_known_deliveries_are_those_stored_for_that_source(engine, sessions):
    stored(engine, delivery_id="evt_1")
    stored(engine, delivery_id="gh_1", source=Source.GITHUB)
    with sessions() as session:
        db = of_session(session)
        wanted = ["evt_1", "gh_1", "evt_2", "evt_1"]
        assert queries.known_deliveries(db, Source.STRIPE, wanted) == {"evt_1"}
        assert queries.known_deliveries(db, Source.GITHUB, wanted) == {"gh_1"}
        assert queries.known_deliveries(db, Source.GITHUB, []) == set()


def test_stats_count_by_source_and_status_with_the_lag_and_the_recent_dead(engine, sessions, reads):
    now = datetime.now(UTC)
    stored(engine, now=now - timedelta(minutes=3))
    stored(engine, now=now, source=Source.GITHUB)
    dead = stored(engine, now=now)
    kill(sessions, dead, at=now)
    long_dead = stored(engine, now=now - timedelta(days=3))
    kill(sessions, long_dead, at=now - timedelta(days=2))
    stuck = stored(engine, now=now - LEASE * 3)
    with transaction(sessions) as session:
        claiming.claim(session, now=now - LEASE * 2, lease=LEASE, ids=[stuck])
    result = queries.event_stats(reads, now=now)
    assert result.counts == {
        ("stripe", "pending"): 1,
        ("github", "pending"): 1,
        ("stripe", "dead"): 2,
        ("stripe", "processing"): 1,
    }
    assert result.oldest_due_age == timedelta(minutes=3)
    assert (result.dead_last_day, result.expired_leases) == (1, 1)


def test_an_account_is_named_by_id_or_by_a_login_one_account_alone_carries(sessions, reads):
    from domain.account_opening import ensure_account

    with transaction(sessions) as session:
        for account_id, login in ((42, "Octo-Org"), (43, "twin"), (44, "Twin"), (45, "46")):
            ensure_account(session, account_id, login=login, now=NOW, welcome_credits=Decimal(0))
    assert queries.account_id_named(reads, "42") == 42
    assert queries.account_id_named(reads, "octo-org") == 42
    assert queries.account_id_named(reads, "twin") is None  # two accounts: no guessing
    assert queries.account_id_named(reads, "46") == 45  # no account 46; a login "46"
    assert queries.account_id_named(reads, "nobody") is None


def test_a_large_table_s_stats_count_the_rows_in_play_and_estimate_the_finished_ones(
    engine, sessions, reads
):
    now = datetime.now(UTC)
    for _ in range(3):
        finish(sessions, stored(engine, now=now))
    skip(sessions, stored(engine, now=now, source=Source.GITHUB))
    kill(sessions, stored(engine, now=now), at=now)
    stored(engine, now=now)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("ANALYZE webhook_events"))  # the statistics the estimate reads
    result = queries.event_stats(reads, now=now, exact_below=0)
    in_play = {("stripe", "dead"): 1, ("stripe", "pending"): 1}
    if engine.dialect.name == "sqlite":  # no statistics: every row counted
        assert result.exact and result.finished_estimate is None
        assert result.counts == {**in_play, ("stripe", "done"): 3, ("github", "skipped"): 1}
    else:
        assert not result.exact and result.counts == in_play
        assert result.finished_estimate == 4
    assert result.total == 6
    assert result.as_json()["total_exact"] is result.exact


def test_a_small_table_s_stats_count_every_status(engine, sessions, reads):
    finish(sessions, stored(engine))
    result = queries.event_stats(reads, now=datetime.now(UTC))
    assert result.exact and result.counts == {("stripe", "done"): 1}


def test_a_name_that_is_no_status_matches_nothing(engine, reads):
    stored(engine)
    assert queries.list_events(reads, EventFilter(statuses=("pending' OR 'x",)), limit=5) == []
    assert len(queries.list_events(reads, EventFilter(statuses=("pending", "x")), limit=5)) == 1


def test_a_delivery_id_is_found_with_the_other_filters(engine, reads):
    wanted = stored(engine, delivery_id="evt_wanted")
    other = stored(engine, delivery_id="evt_wanted", source=Source.GITHUB)
    found = queries.list_events(
        reads, EventFilter(delivery_id="evt_wanted", sources=("stripe",)), limit=5
    )
    assert [s.id for s in found] == [wanted]
    both = queries.matching_ids(reads, EventFilter(delivery_id="evt_wanted"))
    assert both == [wanted, other]
