"""`outbox events retry`: a waiting event is due now and the processors are rung for it."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from outbox import claiming, finishing
from outbox.cli import ringing
from outbox.db import transaction, utcnow
from outbox.models import Status
from outbox.retry import RetryPolicy
from tests.cli.conftest import LEASE, finish, kill, row, stored
from tests.cli.test_ringing import CountingBell
from tests.factories import incoming, record


def waiting(sessions, event_id: int, error: str = "RetryLater: no account 42 yet") -> None:
    """Fail a row's first attempt: pending again, its next attempt a while away."""
    now = utcnow()
    with transaction(sessions) as session:
        [claimed] = claiming.claim(session, now=now, lease=LEASE, ids=[event_id])
        finishing.fail(session, claimed, error, policy=RetryPolicy(base_seconds=600), now=now)


def test_a_retrying_event_is_due_now_with_its_attempts_kept_and_the_processors_rung(
    cli, engine, sessions, monkeypatch
):
    bell = CountingBell()
    monkeypatch.setattr(ringing, "processors_doorbell", lambda settings: bell)
    event_id = stored(engine)
    waiting(sessions, event_id)
    assert row(sessions, event_id).next_attempt_at > utcnow() + timedelta(minutes=5)
    before = utcnow()
    ran = cli("events", "retry", str(event_id))
    assert ran.code == 0, ran.stderr
    assert "1 event(s) due now (attempts kept)" in ran.stdout
    assert "rang the processors for 1 event(s)" in ran.stdout
    again = row(sessions, event_id)
    assert again.status == Status.PENDING and again.attempts == 1
    assert before <= again.next_attempt_at <= utcnow()
    assert again.last_error is not None  # what it waited for stays visible until it runs
    assert bell.rings == [[event_id]]


def test_retry_by_filter_takes_only_pending_events_and_asks_first(cli, engine, sessions):
    [theirs, other, done] = record(
        engine,
        replace(incoming("evt_a", event_type="invoice.paid"), account_id=42),
        replace(incoming("evt_b", event_type="invoice.paid"), account_id=7),
        replace(incoming("evt_c", event_type="invoice.paid"), account_id=42),
    )
    for event in (theirs, other):
        waiting(sessions, event.id)
    finish(sessions, done.id)
    single = cli("events", "retry", "--account", "42", "--type", "invoice.*", "--json")
    assert single.code == 0, single.stderr
    assert [(r["id"], r["outcome"]) for r in single.json_lines()] == [(theirs.id, "due now")]
    assert row(sessions, other.id).next_attempt_at > utcnow() + timedelta(minutes=5)
    refused = cli("events", "retry", "--type", "invoice.*")  # two match, no answer: a no
    assert refused.code == 1 and "Retry 2 events now?" in refused.stderr
    assert "retry cancelled: nothing changed (use --yes in scripts)" in refused.stderr
    assert cli("events", "retry", "--type", "invoice.*", "--yes").code == 0
    assert row(sessions, other.id).next_attempt_at <= utcnow()


def test_finished_dead_and_unknown_events_are_refused_with_what_to_do(cli, engine, sessions):
    done = stored(engine, delivery_id="evt_done")
    finish(sessions, done)
    dead = stored(engine)
    kill(sessions, dead)
    ran = cli("events", "retry", str(done), str(dead), "evt_nowhere")
    assert ran.code == 1
    assert f"refused {done}: status done: it is not waiting; `outbox events replay`" in ran.stdout
    assert f"refused {dead}: status dead" in ran.stdout
    assert "unknown" in ran.stdout and "evt_nowhere" in ran.stdout
    assert "3 event(s) not retried" in ran.stderr
    assert row(sessions, done).status == Status.DONE


def test_retry_needs_ids_or_filters_but_not_both(cli, engine):
    assert cli("events", "retry").code == 2
    assert cli("events", "retry", "1", "--type", "invoice.*").code == 2


def test_replay_of_a_pending_event_points_at_retry(cli, engine):
    event_id = stored(engine)
    ran = cli("events", "replay", str(event_id))
    assert ran.code == 1
    assert "`outbox events retry` makes it due now" in ran.stdout
