"""The operators' writes: replay, retry now and purge, each one guarded statement."""

from __future__ import annotations

from datetime import timedelta

from outbox import claiming, finishing, operator_writes
from outbox.db import transaction, utcnow
from outbox.models import Status
from outbox.retry import RetryPolicy
from tests.factories import incoming, record
from tests.outbox import storage_support as support


def test_replay_puts_finished_rows_back_and_purge_keeps_tombstones(engine, sessions):
    results = record(engine, incoming("evt_a"), incoming("evt_b"))
    for claimed in support.claim(sessions, limit=10):
        with transaction(sessions) as session:
            finishing.mark_done(session, claimed, utcnow())
    with transaction(sessions) as session:
        assert operator_writes.replay(session, [results[0].id], now=utcnow()) == [results[0].id]
    assert support.row(sessions, results[0].id).status == Status.PENDING
    with transaction(sessions) as session:
        purged = operator_writes.purge(
            session, older_than=utcnow() + timedelta(days=1), now=utcnow()
        )
    assert purged == 1  # only the done row; the replayed one is pending again
    tomb = support.row(sessions, results[1].id)
    assert tomb.raw_body is None and tomb.purged_at is not None
    [again] = record(engine, incoming("evt_b"))
    assert again.duplicate and again.id == results[1].id


def test_purge_with_a_limit_takes_that_many_oldest_rows_at_a_time(engine, sessions):
    results = record(engine, *(incoming(f"evt_{n}") for n in range(5)))
    for claimed in support.claim(sessions, limit=10):
        with transaction(sessions) as session:
            finishing.mark_done(session, claimed, utcnow())
    cutoff = utcnow() + timedelta(days=1)
    batches = []
    for _ in range(4):
        with transaction(sessions) as session:
            batches.append(operator_writes.purge(session, older_than=cutoff, now=utcnow(), limit=2))
    assert batches == [2, 2, 1, 0]
    assert (
        support.row(sessions, results[0].id).purged_at
        <= support.row(sessions, results[4].id).purged_at
    )


def test_retry_now_makes_waiting_rows_due_keeping_their_attempts(engine, sessions):
    waiting, finished = record(engine, incoming("evt_wait"), incoming("evt_done"))
    now = utcnow()
    with transaction(sessions) as session:
        [first, second] = claiming.claim(session, now=now, lease=timedelta(minutes=5), limit=10)
        finishing.fail(session, first, "account not found", policy=RetryPolicy(jitter=0), now=now)
        finishing.mark_done(session, second, now)
    assert support.row(sessions, waiting.id).next_attempt_at > now + timedelta(seconds=5)
    later = utcnow()
    with transaction(sessions) as session:
        due = operator_writes.retry_now(session, [waiting.id, finished.id], now=later)
    assert due == [waiting.id]  # a done row is not waiting: replay is for those
    again = support.row(sessions, waiting.id)
    assert (again.status, again.attempts, again.next_attempt_at) == (Status.PENDING, 1, later)
    assert support.row(sessions, finished.id).status == Status.DONE
