"""Applying one stored event now (`outbox receive`): that row alone, ended as a worker ends it."""

from __future__ import annotations

from outbox.models import Status, WebhookEvent
from processors.receive import apply_now
from tests.factories import record
from tests.processors.handlers import effect_counts, scripted_event


def stored(runtime, *items) -> list[int]:
    return [r.id for r in record(runtime.engine, *items)]


def status_of(runtime, event_id: int) -> str:
    with runtime.sessions() as session:
        return session.get_one(WebhookEvent, event_id).status


def test_the_named_row_is_applied_once_and_no_other_due_row_is_touched(runtime):
    named, other = stored(runtime, scripted_event(), scripted_event())
    received = apply_now(runtime, named)
    assert (received.outcome, received.handler, received.note) == ("done", "record_effect", None)
    assert effect_counts(runtime.engine) == {named: 1}
    assert status_of(runtime, other) == Status.PENDING
    assert apply_now(runtime, named).outcome == "not due"  # done: never applied twice
    assert effect_counts(runtime.engine) == {named: 1}


def test_a_handler_failure_is_recorded_as_a_worker_records_it(runtime):
    later, never = stored(
        runtime,
        scripted_event(script={"fail": "retry"}),
        scripted_event(script={"fail": "permanent"}),
    )
    retried = apply_now(runtime, later)
    assert (retried.outcome, retried.note) == ("pending", "RetryLater: the test says: not yet")
    dead = apply_now(runtime, never)
    assert dead.outcome == "dead"
    assert dead.note == "permanent: PermanentFailure: the test says: never"
    assert effect_counts(runtime.engine) == {}


def test_an_event_without_handler_is_skipped_with_the_reason(runtime):
    item = scripted_event()
    [event_id] = stored(runtime, type(item)(**{**item.__dict__, "event_type": "nobody.cares"}))
    received = apply_now(runtime, event_id)
    assert (received.outcome, received.note) == ("skipped", "no handler for stripe nobody.cares")
    assert status_of(runtime, event_id) == Status.SKIPPED
