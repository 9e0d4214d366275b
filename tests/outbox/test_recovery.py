"""Giving back rows whose worker vanished: one guarded statement, a failure-log line per row."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, text, update

from outbox import claiming, finishing, recovery
from outbox.db import transaction, utcnow
from outbox.models import EventFailure, Status, WebhookEvent
from outbox.retry import RetryPolicy
from tests.factories import incoming, record
from tests.outbox import storage_support as support

LEASE = timedelta(minutes=5)


def expired_claim(engine, sessions, count: int):
    """`count` rows claimed together, and a time after their lease ran out."""
    record(engine, *(incoming(f"evt_{n}") for n in range(count)))
    now = utcnow()
    with transaction(sessions) as session:
        claimed = claiming.claim(session, now=now, lease=LEASE, limit=count)
    return claimed, now + LEASE + timedelta(seconds=1)


def test_rows_held_together_come_back_with_their_attempt_refunded_to_be_applied_alone(
    engine, sessions
):
    claimed, later = expired_claim(engine, sessions, 3)
    policy = RetryPolicy(max_attempts=1, jitter=0)  # refunded: never dead for it
    with transaction(sessions) as session:
        assert recovery.release_expired(session, now=later, policy=policy) == 3
    with sessions() as session:
        rows = session.scalars(select(WebhookEvent).order_by(WebhookEvent.id)).all()
        log = session.scalars(select(EventFailure).order_by(EventFailure.event_id)).all()
    reason = (
        "worker died or lease expired while it held 3 rows: no attempt counted, applied alone next"
    )
    assert [(r.status, r.attempts, r.interruptions, r.last_error) for r in rows] == [
        (Status.PENDING, 0, 1, reason)
    ] * 3
    assert all(r.lease_owner is None and r.next_attempt_at == later for r in rows)
    assert [(f.event_id, f.attempt, f.outcome, f.worker, f.error) for f in log] == [
        (c.id, 1, "lease-expired", c.lease_owner, reason) for c in claimed
    ]


def test_a_row_held_alone_counts_its_attempt_and_is_dead_after_the_last(engine, sessions):
    [claimed], later = expired_claim(engine, sessions, 1)
    with transaction(sessions) as session:
        released = recovery.release_expired(
            session, now=later, policy=RetryPolicy(max_attempts=1, jitter=0)
        )
    assert released == 1
    reason = "worker died or lease expired 1 time while applying it"
    with sessions() as session:
        row = session.get_one(WebhookEvent, claimed.id)
        [logged] = session.scalars(select(EventFailure)).all()
    assert (row.status, row.attempts, row.interruptions, row.last_error) == (
        Status.DEAD, 1, 1, reason,
    )  # fmt: skip
    assert row.processed_at == later and row.next_attempt_at is None
    assert (logged.attempt, logged.outcome, logged.worker) == (1, "dead", claimed.lease_owner)


def test_a_live_lease_and_a_row_no_longer_processing_are_left_alone(engine, sessions):
    [claimed], later = expired_claim(engine, sessions, 1)
    policy = RetryPolicy(jitter=0)
    with transaction(sessions) as session:
        assert (
            recovery.release_expired(session, now=later - timedelta(seconds=2), policy=policy) == 0
        )
    with transaction(sessions) as session:
        session.get_one(WebhookEvent, claimed.id).status = Status.DONE
    with transaction(sessions) as session:
        assert recovery.release_expired(session, now=later, policy=policy) == 0
    with sessions() as session:
        assert session.scalars(select(EventFailure)).all() == []


def test_at_most_the_limit_of_rows_come_back_oldest_lease_first(engine, sessions):
    claimed, later = expired_claim(engine, sessions, 3)
    with transaction(sessions) as session:
        assert recovery.release_expired(session, now=later, policy=RetryPolicy(), limit=2) == 2
    with transaction(sessions) as session:
        assert recovery.release_expired(session, now=later, policy=RetryPolicy(), limit=2) == 1
    with sessions() as session:
        statuses = session.scalars(select(WebhookEvent.status)).all()
    assert statuses == [Status.PENDING] * 3 and len(claimed) == 3


def test_expired_leases_are_released_to_be_claimed_again(engine, sessions):
    record(engine, incoming())
    [claimed] = support.claim(sessions)
    later = claimed.lease_expires_at + timedelta(seconds=1)
    with transaction(sessions) as session:
        assert recovery.release_expired(session, now=utcnow(), policy=support.THREE_TRIES) == 0
    with transaction(sessions) as session:
        assert recovery.release_expired(session, now=later, policy=support.THREE_TRIES) == 1
    [again] = support.claim(sessions, now=later)
    assert again.id == claimed.id and again.attempts == 2
    with transaction(sessions) as session:
        assert finishing.mark_done(session, claimed, later) is False  # the old worker lost it


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
