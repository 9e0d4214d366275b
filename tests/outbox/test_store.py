"""The storage contract: each operation is one guarded statement, on Postgres and SQLite."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text, update

from outbox import claiming, finishing, operator_writes, recovery, store
from outbox.db import make_engine, transaction, utcnow
from outbox.models import EventFailure, Status, WebhookEvent
from outbox.retry import RetryPolicy
from tests.conftest import CORPUS
from tests.factories import incoming, record

LEASE = timedelta(minutes=5)
POLICY = RetryPolicy(base_seconds=10, max_delay_seconds=100, max_attempts=3, jitter=0)


def claim(sessions, **kwargs):
    kwargs.setdefault("now", utcnow())
    with transaction(sessions) as session:
        return claiming.claim(session, lease=LEASE, **kwargs)


def row(sessions, event_id: int) -> WebhookEvent:
    with sessions() as session:
        return session.get_one(WebhookEvent, event_id)


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
    assert row(sessions, result.id).raw_body == raw


def test_two_claims_never_take_the_same_row(engine, sessions):
    record(engine, *(incoming() for _ in range(5)))
    first = claim(sessions, limit=3)
    second = claim(sessions, limit=10)
    assert len(first) == 3 and len(second) == 2
    assert not {c.id for c in first} & {c.id for c in second}
    assert claim(sessions, limit=10) == []


def test_claim_takes_only_the_ids_asked_for(engine, sessions):
    results = record(engine, *(incoming() for _ in range(3)))
    claimed = claim(sessions, ids=[results[1].id])
    assert [c.id for c in claimed] == [results[1].id]
    assert claimed[0].attempts == 1


def claim_for_pass(sessions, **kwargs):
    kwargs.setdefault("now", utcnow())
    with transaction(sessions) as session:
        return claiming.claim_for_pass(session, lease=LEASE, **kwargs)


def test_a_pass_claims_its_named_rows_first_then_the_oldest_others_up_to_its_limit(
    engine, sessions
):
    ids = [r.id for r in record(engine, *(incoming(f"evt_{n}") for n in range(6)))]
    claimed = claim_for_pass(sessions, ids=[ids[4], ids[5]], limit=4)
    assert sorted(c.id for c in claimed) == [ids[0], ids[1], ids[4], ids[5]]
    assert len({c.lease_owner for c in claimed}) == 1
    assert all(c.attempts == 1 and c.lease_expires_at.tzinfo is not None for c in claimed)
    # Named rows already taken: the pass takes the others that are due, never a row twice.
    again = claim_for_pass(sessions, ids=[ids[4], ids[5]], limit=4)
    assert sorted(c.id for c in again) == [ids[2], ids[3]]
    assert claim_for_pass(sessions, ids=[ids[0]], limit=4) == []


def test_a_pass_claims_a_named_row_of_an_object_only_after_the_earlier_event(engine, sessions):
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    early, late = record(
        engine,
        incoming("evt_early", object_id="sub_1", created=t0),
        incoming("evt_late", object_id="sub_1", created=t0 + timedelta(seconds=5)),
    )
    [claimed] = claim_for_pass(sessions, ids=[late.id], limit=10)
    assert claimed.id == early.id  # the named one waits; the earlier one is due
    assert claim_for_pass(sessions, ids=[late.id], limit=10) == []


def test_events_of_one_object_are_claimed_in_created_order(engine, sessions):
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    late = incoming("evt_late", object_id="sub_1", created=t0 + timedelta(seconds=5))
    early = incoming("evt_early", object_id="sub_1", created=t0)
    other = incoming("evt_other", object_id="sub_2", created=t0 + timedelta(seconds=9))
    ids = {r.id for r in record(engine, late, early, other)}
    first = claim(sessions, limit=10)
    assert {c.delivery_id for c in first} == {"evt_early", "evt_other"}
    assert claim(sessions, limit=10) == []  # evt_late waits while evt_early is processing
    with transaction(sessions) as session:
        early_claim = next(c for c in first if c.delivery_id == "evt_early")
        assert finishing.fail(
            session, early_claim, "boom", policy=POLICY, now=utcnow(), permanent=True
        )
    [late_claim] = claim(sessions, limit=10)
    assert late_claim.delivery_id == "evt_late" and late_claim.id in ids


def test_an_older_event_arriving_late_waits_while_a_newer_one_of_its_object_is_processing(
    engine, sessions
):
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    record(engine, incoming("evt_new", object_id="sub_1", created=t0 + timedelta(seconds=5)))
    [newer] = claim(sessions, limit=10)
    [older] = record(engine, incoming("evt_old", object_id="sub_1", created=t0))
    record(engine, incoming("evt_other", object_id="sub_2", created=t0))
    assert [c.delivery_id for c in claim(sessions, limit=10)] == ["evt_other"]
    assert claim_for_pass(sessions, ids=[older.id], limit=10) == []
    with transaction(sessions) as session:
        assert finishing.mark_done(session, newer, utcnow())
    [claimed] = claim(sessions, limit=10)
    assert claimed.id == older.id


def test_a_claim_not_yet_committed_keeps_a_concurrent_claim_off_its_objects(
    database_url, engine, sessions
):
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer at a time: a second claim waits for the first")
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    record(engine, incoming("evt_new", object_id="sub_1", created=t0 + timedelta(seconds=5)))
    with transaction(sessions) as first:
        [newer] = claiming.claim(first, now=utcnow(), lease=LEASE, limit=10)
        # An older event of the object is stored while the first claim is not committed:
        # the second claim cannot see evt_new processing yet, and must still leave evt_old.
        [older] = record(engine, incoming("evt_old", object_id="sub_1", created=t0))
        assert claim(sessions, limit=10) == []
        assert claim_for_pass(sessions, ids=[older.id], limit=10) == []
    assert newer.delivery_id == "evt_new"
    assert claim(sessions, limit=10) == []  # committed: evt_new is processing


def test_finish_needs_the_lease(engine, sessions):
    record(engine, incoming())
    [claimed] = claim(sessions)
    stale = claiming.ClaimedEvent(**{**claimed.__dict__, "lease_owner": "someone-else"})
    with transaction(sessions) as session:
        assert finishing.mark_done(session, stale, utcnow()) is False
    later = claimed.lease_expires_at + timedelta(seconds=1)
    with transaction(sessions) as session:
        assert finishing.mark_done(session, claimed, later) is False  # lease expired
    with transaction(sessions) as session:
        assert finishing.mark_done(session, claimed, utcnow()) is True
    assert row(sessions, claimed.id).status == Status.DONE


def test_fail_backs_off_then_goes_dead_with_its_errors_logged(engine, sessions):
    record(engine, incoming())
    now = utcnow()
    for attempt in (1, 2):
        [claimed] = claim(sessions, now=now)
        assert claimed.attempts == attempt
        with transaction(sessions) as session:
            assert (
                finishing.fail(session, claimed, f"err {attempt}", policy=POLICY, now=now)
                == "pending"
            )
        saved = row(sessions, claimed.id)
        assert saved.next_attempt_at == now + timedelta(seconds=POLICY.nominal_delay(attempt))
        assert claim(sessions, now=now) == []  # not due yet
        now = saved.next_attempt_at
    [claimed] = claim(sessions, now=now)
    with transaction(sessions) as session:
        assert finishing.fail(session, claimed, "err 3", policy=POLICY, now=now) == Status.DEAD
    saved = row(sessions, claimed.id)
    assert (saved.status, saved.last_error, saved.attempts) == ("dead", "err 3", 3)
    with sessions() as session:
        log = session.scalars(select(EventFailure).order_by(EventFailure.attempt)).all()
    assert [(f.attempt, f.error, f.outcome) for f in log] == [
        (1, "err 1", "retry"), (2, "err 2", "retry"), (3, "err 3", "dead"),
    ]  # fmt: skip


def test_expired_leases_are_released_to_be_claimed_again(engine, sessions):
    record(engine, incoming())
    [claimed] = claim(sessions)
    later = claimed.lease_expires_at + timedelta(seconds=1)
    with transaction(sessions) as session:
        assert recovery.release_expired(session, now=utcnow(), policy=POLICY) == 0
    with transaction(sessions) as session:
        assert recovery.release_expired(session, now=later, policy=POLICY) == 1
    [again] = claim(sessions, now=later)
    assert again.id == claimed.id and again.attempts == 2
    with transaction(sessions) as session:
        assert finishing.mark_done(session, claimed, later) is False  # the old worker lost it


def test_replay_puts_finished_rows_back_and_purge_keeps_tombstones(engine, sessions):
    results = record(engine, incoming("evt_a"), incoming("evt_b"))
    for claimed in claim(sessions, limit=10):
        with transaction(sessions) as session:
            finishing.mark_done(session, claimed, utcnow())
    with transaction(sessions) as session:
        assert operator_writes.replay(session, [results[0].id], now=utcnow()) == [results[0].id]
    assert row(sessions, results[0].id).status == Status.PENDING
    with transaction(sessions) as session:
        purged = operator_writes.purge(
            session, older_than=utcnow() + timedelta(days=1), now=utcnow()
        )
    assert purged == 1  # only the done row; the replayed one is pending again
    tomb = row(sessions, results[1].id)
    assert tomb.raw_body is None and tomb.purged_at is not None
    [again] = record(engine, incoming("evt_b"))
    assert again.duplicate and again.id == results[1].id


def test_purge_with_a_limit_takes_that_many_oldest_rows_at_a_time(engine, sessions):
    results = record(engine, *(incoming(f"evt_{n}") for n in range(5)))
    for claimed in claim(sessions, limit=10):
        with transaction(sessions) as session:
            finishing.mark_done(session, claimed, utcnow())
    cutoff = utcnow() + timedelta(days=1)
    batches = []
    for _ in range(4):
        with transaction(sessions) as session:
            batches.append(operator_writes.purge(session, older_than=cutoff, now=utcnow(), limit=2))
    assert batches == [2, 2, 1, 0]
    assert row(sessions, results[0].id).purged_at <= row(sessions, results[4].id).purged_at


def test_retry_now_makes_waiting_rows_due_keeping_their_attempts(engine, sessions):
    waiting, finished = record(engine, incoming("evt_wait"), incoming("evt_done"))
    now = utcnow()
    with transaction(sessions) as session:
        [first, second] = claiming.claim(session, now=now, lease=timedelta(minutes=5), limit=10)
        finishing.fail(session, first, "account not found", policy=RetryPolicy(jitter=0), now=now)
        finishing.mark_done(session, second, now)
    assert row(sessions, waiting.id).next_attempt_at > now + timedelta(seconds=5)
    later = utcnow()
    with transaction(sessions) as session:
        due = operator_writes.retry_now(session, [waiting.id, finished.id], now=later)
    assert due == [waiting.id]  # a done row is not waiting: replay is for those
    again = row(sessions, waiting.id)
    assert (again.status, again.attempts, again.next_attempt_at) == (Status.PENDING, 1, later)
    assert row(sessions, finished.id).status == Status.DONE


def test_retry_policy_spans_about_a_day():
    span = RetryPolicy().total_span()
    assert timedelta(hours=18) < span < timedelta(hours=30)


def test_a_claimed_row_is_built_from_the_claim_columns_in_field_order():
    from dataclasses import fields

    columns = [column.name for column in claiming._claimed_columns()]
    assert columns == [f.name for f in fields(claiming.ClaimedEvent)][: len(columns)]


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


def test_due_rows_of_the_same_time_come_in_id_order(engine, sessions):
    """The sweeper rings the oldest due rows first; rows due at one instant go by id, whatever
    order the table holds them in (an update moves a row's version to the end) and whatever
    plan the database picks (a heap scan and a sort, here forced on Postgres)."""
    now = utcnow()
    first, second, third = record(engine, incoming("evt_a"), incoming("evt_b"), incoming("evt_c"))
    ids = [first.id, second.id, third.id]
    with transaction(sessions) as session:
        session.execute(
            update(WebhookEvent).where(WebhookEvent.id.in_(ids)).values(next_attempt_at=now)
        )
        session.execute(update(WebhookEvent).where(WebhookEvent.id == first.id).values(attempts=0))
    with transaction(sessions) as session:
        if engine.dialect.name == "postgresql":
            for plan in ("enable_indexscan", "enable_indexonlyscan", "enable_bitmapscan"):
                session.execute(text(f"SET LOCAL {plan} = off"))
        assert recovery.due_ids(session, now=now) == ids


def plan_of(session, statement, params) -> str:
    """EXPLAIN of a driver statement (outbox.driver.Statement) in `session`'s transaction."""
    from outbox.driver import postgres_driver, postgres_text

    driver = postgres_driver(session)
    assert driver is not None
    sql, _ = postgres_text(statement.statement, driver.dialect)
    cursor = session.connection().connection.driver_connection.cursor()
    cursor.execute("EXPLAIN " + sql, params)
    return "\n".join(row[0] for row in cursor.fetchall())


def rows_in_play_the_statistics_never_saw(engine, sessions, *, finished: int, pending: int):
    """`finished` rows finished and analysed (the planner's view of a table at rest), then
    `pending` rows of as many objects stored after it; their ids."""
    record(engine, *(incoming(f"evt_old_{n}") for n in range(finished)))
    with transaction(sessions) as session:
        session.execute(update(WebhookEvent).values(status=Status.DONE.value, next_attempt_at=None))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE webhook_events"))
    new = [incoming(f"evt_new_{n}", object_id=f"obj_{n}") for n in range(pending)]
    return [r.id for r in record(engine, *new)]


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_claim_walks_the_due_index_and_finds_named_rows_by_id_whatever_the_statistics(
    engine, sessions
):
    """Statistics taken while nothing was in play put the pending rows at none. The claim
    still walks ix_webhook_events_due in claim order for its other rows, and looks the rows
    its message named up by primary key: it never reads every row in play (nor sorts them),
    and ix_webhook_events_in_line serves only the probe for an object's earlier rows."""
    ids = rows_in_play_the_statistics_never_saw(engine, sessions, finished=2000, pending=3000)
    now = utcnow()
    params = {"ids": ids[-3:], "now": now, "limit": 50, "owner": "w", "expires": now + LEASE}
    with transaction(sessions) as session:
        claiming._WALK_THE_DUE_INDEX.rows(session)
        plan = plan_of(session, claiming._CLAIM_FOR_PASS, params)
    assert "using webhook_events_pkey on webhook_events named_candidate" in plan, plan
    assert "using ix_webhook_events_due on webhook_events candidate" in plan, plan
    assert "Sort" not in plan, plan
    probes = re.findall(r"using ix_webhook_events_in_line on webhook_events (\w+)", plan)
    assert probes and all(alias.startswith("in_line") for alias in probes), plan
