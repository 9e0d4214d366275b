"""Finishing a batch's claimed rows in a few statements: done and skipped together, the
failed ones together, each guarded by its lease."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from sqlalchemy import select

from outbox import claiming, finishing
from outbox.claiming import claim
from outbox.db import transaction, utcnow
from outbox.fields import TEXT_FIELD_CAP
from outbox.models import EventFailure, Status, WebhookEvent
from outbox.retry import RetryPolicy
from tests.factories import incoming, record
from tests.outbox import storage_support as support

LEASE = timedelta(minutes=5)
POLICY = RetryPolicy(base_seconds=10, max_delay_seconds=100, max_attempts=2, jitter=0)


def claimed(engine, sessions, count: int):
    """`count` rows claimed now, and the time of the claim."""
    record(engine, *(incoming(f"evt_{n}") for n in range(count)))
    now = utcnow()
    with transaction(sessions) as session:
        return claim(session, now=now, lease=LEASE, limit=count), now


def rows(sessions) -> dict[int, WebhookEvent]:
    with sessions() as session:
        return {r.id: r for r in session.scalars(select(WebhookEvent))}


def test_done_and_skipped_rows_finish_together_each_with_its_note_while_the_lease_holds(
    engine, sessions
):
    (done, skipped, stolen), now = claimed(engine, sessions, 3)
    not_ours = dataclasses.replace(stolen, lease_owner="another claim")
    with transaction(sessions) as session:
        finished = finishing.finish_many(
            session,
            [
                (done, Status.DONE, None),
                (skipped, Status.SKIPPED, "no handler for stripe push"),
                (not_ours, Status.DONE, None),
            ],
            now,
        )
    assert finished == {done.id, skipped.id}
    held = rows(sessions)
    assert (held[done.id].status, held[done.id].last_error) == (Status.DONE, None)
    assert held[skipped.id].status == Status.SKIPPED
    assert held[skipped.id].last_error == "no handler for stripe push"
    assert held[stolen.id].status == Status.PROCESSING


def test_a_done_rows_note_from_a_webhook_is_stored_clean_and_capped(engine, sessions):
    """A handler's note may quote the payload: NULs and lone surrogates, which no UTF-8
    column holds, are taken out, and it is capped as any stored field is."""
    (done,), now = claimed(engine, sessions, 1)
    note = "unpaid session \x00\ud800" + "x" * 400
    with transaction(sessions) as session:
        assert finishing.finish_many(session, [(done, Status.DONE, note)], now) == {done.id}
    stored = rows(sessions)[done.id].last_error
    assert stored is not None and stored.startswith("unpaid session ?") and "\x00" not in stored
    assert len(stored) == TEXT_FIELD_CAP


def test_failed_rows_are_put_back_or_dead_together_and_only_rows_still_ours_are_logged(
    engine, sessions
):
    (retried, permanent, stolen), now = claimed(engine, sessions, 3)
    failures = [
        finishing.Failure(retried, "RetryLater: not yet"),
        finishing.Failure(permanent, "permanent: never", permanent=True),
        finishing.Failure(dataclasses.replace(stolen, lease_owner="another claim"), "boom"),
    ]
    with transaction(sessions) as session:
        statuses = finishing.fail_many(session, failures, policy=POLICY, now=now)
    assert statuses == {retried.id: Status.PENDING, permanent.id: Status.DEAD}
    held = rows(sessions)
    assert held[retried.id].next_attempt_at == now + timedelta(seconds=POLICY.nominal_delay(1))
    assert held[retried.id].processed_at is None
    assert (held[permanent.id].status, held[permanent.id].processed_at) == (Status.DEAD, now)
    assert held[stolen.id].status == Status.PROCESSING
    with sessions() as session:
        log = session.scalars(select(EventFailure).order_by(EventFailure.event_id)).all()
    assert [(f.event_id, f.error, f.outcome) for f in log] == [
        (retried.id, "RetryLater: not yet", "retry"),
        (permanent.id, "permanent: never", "dead"),
    ]


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_finishing_never_reads_the_rows_in_line_whatever_the_statistics(engine, sessions):
    """Statistics taken while nothing was in play put the rows in line at none; finishing a
    batch still finds its rows by id or through the processing rows, never by reading every
    pending row through ix_webhook_events_in_line."""
    support.rows_in_play_the_statistics_never_saw(engine, sessions, finished=2000, pending=3000)
    now = utcnow()
    with transaction(sessions) as session:
        batch = claim(session, now=now, lease=LEASE, limit=50)
    params = {"ids": [e.id for e in batch], "statuses": ["done"] * len(batch),
              "notes": [None] * len(batch), "owner": batch[0].lease_owner, "now": now}  # fmt: skip
    with sessions() as session:
        plan = support.plan_of(session, finishing._FINISH_EACH_AS_GIVEN, params)
        table, index = support.where_rows_are_now(session)
    # Only the table holding the rows counts: the empty partitions beside it cost nothing.
    in_line = index.get("ix_webhook_events_in_line", "ix_webhook_events_in_line")
    assert f"{in_line} on {table}" not in plan and f"Seq Scan on {table} " not in plan, plan


def test_finish_needs_the_lease(engine, sessions):
    record(engine, incoming())
    [claimed] = support.claim(sessions)
    stale = claiming.ClaimedEvent(**{**claimed.__dict__, "lease_owner": "someone-else"})
    with transaction(sessions) as session:
        assert finishing.mark_done(session, stale, utcnow()) is False
    later = claimed.lease_expires_at + timedelta(seconds=1)
    with transaction(sessions) as session:
        assert finishing.mark_done(session, claimed, later) is False  # lease expired
    with transaction(sessions) as session:
        assert finishing.mark_done(session, claimed, utcnow()) is True
    assert support.row(sessions, claimed.id).status == Status.DONE


@pytest.mark.parametrize("count", [1, 2])
def test_fail_needs_the_lease_and_logs_nothing_without_it(engine, sessions, count):
    batch, now = claimed(engine, sessions, count)
    stale = [dataclasses.replace(event, lease_owner="someone-else") for event in batch]
    failures = [finishing.Failure(event, "late") for event in stale]
    with transaction(sessions) as session:
        assert finishing.fail_many(session, failures, policy=POLICY, now=now) == {}
    later = batch[0].lease_expires_at + timedelta(seconds=1)
    failures = [finishing.Failure(event, "late") for event in batch]
    with transaction(sessions) as session:
        assert finishing.fail_many(session, failures, policy=POLICY, now=later) == {}
    assert {row.status for row in rows(sessions).values()} == {Status.PROCESSING}
    with sessions() as session:
        assert session.scalars(select(EventFailure)).all() == []


def test_fail_backs_off_then_goes_dead_with_its_errors_logged(engine, sessions):
    record(engine, incoming())
    now = utcnow()
    for attempt in (1, 2):
        [claimed] = support.claim(sessions, now=now)
        assert claimed.attempts == attempt
        with transaction(sessions) as session:
            assert (
                finishing.fail(
                    session, claimed, f"err {attempt}", policy=support.THREE_TRIES, now=now
                )
                == "pending"
            )
        saved = support.row(sessions, claimed.id)
        assert saved.next_attempt_at == now + timedelta(
            seconds=support.THREE_TRIES.nominal_delay(attempt)
        )
        assert support.claim(sessions, now=now) == []  # not due yet
        now = saved.next_attempt_at
    [claimed] = support.claim(sessions, now=now)
    with transaction(sessions) as session:
        assert (
            finishing.fail(session, claimed, "err 3", policy=support.THREE_TRIES, now=now)
            == Status.DEAD
        )
    saved = support.row(sessions, claimed.id)
    assert (saved.status, saved.last_error, saved.attempts) == ("dead", "err 3", 3)
    with sessions() as session:
        log = session.scalars(select(EventFailure).order_by(EventFailure.attempt)).all()
    assert [(f.attempt, f.error, f.outcome) for f in log] == [
        (1, "err 1", "retry"), (2, "err 2", "retry"), (3, "err 3", "dead"),
    ]  # fmt: skip
