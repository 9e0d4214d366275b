"""The apply step, in this process, on SQLite and Postgres: each row ends in the right state."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from outbox import recovery
from outbox.db import transaction, utcnow
from outbox.models import EventFailure, Status, WebhookEvent
from processors import runtime as runtimes
from processors.apply import EVENTS_PER_PASS, Outcome, process_pass
from tests.factories import record
from tests.processors.handlers import WorkerDied, effect_counts, effect_rows, scripted_event


def row(runtime, event_id: int) -> WebhookEvent:
    with runtime.sessions() as session:
        return session.get_one(WebhookEvent, event_id)


def stored(runtime, *items) -> list[int]:
    return [r.id for r in record(runtime.engine, *items)]


def test_an_event_is_applied_once_and_its_row_is_done(runtime):
    [event_id] = stored(runtime, scripted_event())
    assert process_pass(runtime, [event_id]) == {Outcome.DONE: 1}
    assert process_pass(runtime, [event_id]) == {}  # a second ring finds nothing to do
    done = row(runtime, event_id)
    assert done.status == Status.DONE and done.attempts == 1 and done.processed_at is not None
    assert done.lease_owner is None and done.last_error is None
    assert effect_counts(runtime.engine) == {event_id: 1}


def test_an_event_type_without_handler_is_skipped_with_the_reason(runtime):
    item = scripted_event()
    [event_id] = stored(runtime, type(item)(**{**item.__dict__, "event_type": "nobody.cares"}))
    assert process_pass(runtime, [event_id]) == {Outcome.SKIPPED: 1}
    skipped = row(runtime, event_id)
    assert skipped.status == Status.SKIPPED
    assert skipped.last_error == "no handler for stripe nobody.cares"
    assert effect_counts(runtime.engine) == {}


def test_a_stripe_event_of_the_other_mode_is_skipped_never_applied(runtime, proc_settings):
    live_runtime = runtimes.configure(
        proc_settings.model_copy(update={"stripe_mode": "live"}), engine=runtime.engine
    )
    test_mode, no_mode, live = stored(
        runtime,
        scripted_event(livemode=False),
        scripted_event(livemode=None),
        scripted_event(livemode=True),
    )
    counts = process_pass(live_runtime, [test_mode, no_mode, live])
    assert counts == {Outcome.SKIPPED: 2, Outcome.DONE: 1}
    assert row(runtime, test_mode).last_error == "test-mode event; STRIPE_MODE=live"
    assert row(runtime, no_mode).last_error == "event has no livemode; STRIPE_MODE=live"
    assert effect_counts(runtime.engine) == {live: 1}


def test_a_github_event_is_applied_whatever_the_stripe_mode(runtime, proc_settings):
    live_runtime = runtimes.configure(
        proc_settings.model_copy(update={"stripe_mode": "live"}), engine=runtime.engine
    )
    [event_id] = stored(runtime, scripted_event(source="github"))
    assert process_pass(live_runtime, [event_id]) == {Outcome.DONE: 1}


def test_a_body_that_is_not_json_is_dead_at_once(runtime):
    item = scripted_event()
    [event_id] = stored(runtime, type(item)(**{**item.__dict__, "raw_body": b"{not json"}))
    assert process_pass(runtime, [event_id]) == {Outcome.DEAD: 1}
    dead = row(runtime, event_id)
    assert dead.status == Status.DEAD and dead.attempts == 1
    assert dead.last_error.startswith("permanent: PermanentFailure: unprocessable: body is not")


def test_a_permanent_failure_is_dead_at_once_with_its_reason(runtime):
    [event_id] = stored(runtime, scripted_event(script={"fail": "permanent"}))
    assert process_pass(runtime, [event_id]) == {Outcome.DEAD: 1}
    dead = row(runtime, event_id)
    assert dead.status == Status.DEAD and dead.attempts == 1
    assert dead.last_error == "permanent: PermanentFailure: the test says: never"
    assert dead.next_attempt_at is None


def run_until_finished(runtime, event_id: int, timeout: float = 20.0) -> list[Outcome]:
    """Pass after pass until the row leaves `pending`: the outcome of each attempt."""
    outcomes: list[Outcome] = []
    deadline = time.monotonic() + timeout
    while row(runtime, event_id).status == Status.PENDING and time.monotonic() < deadline:
        outcomes += list(process_pass(runtime, [event_id]))
        time.sleep(0.02)
    return outcomes


#: Retries due after 0.25 s at the soonest: a pass that fails a row finishes long before,
#: however busy the machine, so it never meets the row again (a retry due sooner could be
#: claimed by the slow pass that failed it, which would count one outcome twice).
SLOW_RETRIES = {"retry_base_seconds": 0.5, "retry_max_delay_seconds": 1.0}


def slow_retries(runtime, proc_settings):  # type: ignore[no-untyped-def]
    settings = proc_settings.model_copy(update=SLOW_RETRIES)
    return runtimes.configure(settings, engine=runtime.engine)


def test_a_failing_event_is_retried_with_backoff_then_dead_after_the_last_attempt(
    runtime, proc_settings
):
    runtime = slow_retries(runtime, proc_settings)
    [event_id] = stored(runtime, scripted_event(script={"fail": "retry"}))
    before = utcnow()
    assert process_pass(runtime, [event_id]) == {Outcome.RETRY: 1}
    waiting = row(runtime, event_id)
    assert waiting.status == Status.PENDING and waiting.attempts == 1
    assert waiting.last_error == "RetryLater: the test says: not yet"
    assert waiting.next_attempt_at > before
    assert run_until_finished(runtime, event_id) == [Outcome.RETRY, Outcome.DEAD]
    dead = row(runtime, event_id)
    assert dead.status == Status.DEAD and dead.attempts == 3  # retry_max_attempts
    with runtime.sessions() as session:
        failures = session.scalars(
            select(EventFailure.outcome).where(EventFailure.event_id == event_id)
        ).all()
    assert failures == ["retry", "retry", "dead"]
    assert effect_counts(runtime.engine) == {}


def test_a_row_is_not_tried_again_before_its_backoff_delay(runtime, proc_settings):
    patient = runtimes.configure(
        proc_settings.model_copy(update={"retry_base_seconds": 60, "retry_max_delay_seconds": 120}),
        engine=runtime.engine,
    )
    [event_id] = stored(runtime, scripted_event(script={"fail": "retry"}))
    assert process_pass(patient, [event_id]) == {Outcome.RETRY: 1}
    assert process_pass(patient, [event_id]) == {}  # not due for about a minute
    assert row(runtime, event_id).attempts == 1


def test_an_unexpected_error_is_retried_and_the_event_applied_once_when_it_passes(
    runtime, proc_settings
):
    runtime = slow_retries(runtime, proc_settings)
    [event_id] = stored(runtime, scripted_event(script={"fail_until": 2}))
    assert process_pass(runtime, [event_id]) == {Outcome.RETRY: 1}
    assert row(runtime, event_id).last_error == "RuntimeError: the test says: fail attempt 1"
    assert run_until_finished(runtime, event_id) == [Outcome.DONE]
    assert row(runtime, event_id).attempts == 2
    assert effect_counts(runtime.engine) == {event_id: 1}


def test_a_worker_whose_lease_ran_out_applies_nothing(runtime, proc_settings):
    short = runtimes.configure(
        proc_settings.model_copy(update={"lease_seconds": 1}), engine=runtime.engine
    )
    [event_id] = stored(runtime, scripted_event(script={"sleep": 1.3}))
    assert process_pass(short, [event_id]) == {Outcome.LEASE_LOST: 1}
    assert effect_counts(runtime.engine) == {}  # the effect was rolled back with the txn
    lost = row(runtime, event_id)
    assert lost.status == Status.PROCESSING  # the sweeper gives it back (test_sweeper)


def test_a_pass_also_claims_due_rows_nobody_rang_up_to_its_batch(runtime):
    ids = stored(runtime, *(scripted_event() for _ in range(EVENTS_PER_PASS + 3)))
    assert process_pass(runtime, ids[-1:]) == {Outcome.DONE: EVENTS_PER_PASS}
    assert row(runtime, ids[-1]).status == Status.DONE  # the rung row first, though newest
    assert process_pass(runtime, []) == {Outcome.DONE: 3}
    assert set(effect_counts(runtime.engine)) == set(ids)


def test_events_of_one_object_are_applied_in_created_order_whatever_the_rings(runtime):
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    items = [scripted_event(object_id="sub_1", created=t0 + timedelta(seconds=n)) for n in range(4)]
    ids = stored(runtime, *reversed(items))[::-1]  # stored newest first
    assert process_pass(runtime, [ids[3]]) == {Outcome.DONE: 4}
    assert [r.event_id for r in effect_rows(runtime.engine)] == ids


def test_an_earlier_dead_event_no_longer_holds_up_its_object(runtime):
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    first, second = stored(
        runtime,
        scripted_event(object_id="cus_1", created=t0, script={"fail": "permanent"}),
        scripted_event(object_id="cus_1", created=t0 + timedelta(seconds=1)),
    )
    assert process_pass(runtime, [second]) == {Outcome.DEAD: 1, Outcome.DONE: 1}
    assert row(runtime, first).status == Status.DEAD
    assert effect_counts(runtime.engine) == {second: 1}


def test_a_failing_event_of_a_batch_rolls_back_only_its_own_effects(runtime, proc_settings):
    runtime = slow_retries(runtime, proc_settings)
    ok_1, failing, crashing, ok_2 = stored(
        runtime,
        scripted_event(),
        scripted_event(script={"fail": "retry"}),
        scripted_event(script={"fail": "crash"}),
        scripted_event(),
    )
    counts = process_pass(runtime, [ok_1, failing, crashing, ok_2])
    assert counts == {Outcome.DONE: 2, Outcome.RETRY: 2}
    assert effect_counts(runtime.engine) == {ok_1: 1, ok_2: 1}
    assert row(runtime, failing).status == Status.PENDING
    assert row(runtime, crashing).last_error == "RuntimeError: the test says: crash"


def test_a_batch_that_outlived_its_lease_applies_none_of_its_rows(runtime, proc_settings):
    short = runtimes.configure(
        proc_settings.model_copy(update={"lease_seconds": 1}), engine=runtime.engine
    )
    slow, quick = stored(runtime, scripted_event(script={"sleep": 1.3}), scripted_event())
    assert process_pass(short, [slow, quick]) == {Outcome.LEASE_LOST: 2}
    assert effect_counts(runtime.engine) == {}  # the quick row's effect went with the batch
    assert {row(runtime, i).status for i in (slow, quick)} == {Status.PROCESSING}


def batch_runtime(runtime, proc_settings):  # type: ignore[no-untyped-def]
    from tests.processors.handlers import BATCH_HANDLER_TABLE, batches_applied

    batches_applied.clear()
    settings = proc_settings.model_copy(
        update={"handler_table": BATCH_HANDLER_TABLE, **SLOW_RETRIES}
    )
    return runtimes.configure(settings, engine=runtime.engine), batches_applied


def test_a_set_based_handler_applies_a_batch_at_once_and_its_declined_rows_alone(
    runtime, proc_settings
):
    batched, batches = batch_runtime(runtime, proc_settings)
    plain_1, declined, failing, plain_2 = stored(
        runtime,
        scripted_event(),
        scripted_event(script={"alone": True}),
        scripted_event(script={"fail": "retry"}),
        scripted_event(),
    )
    counts = process_pass(batched, [plain_1, declined, failing, plain_2])
    assert counts == {Outcome.DONE: 3, Outcome.RETRY: 1}
    assert batches == [[plain_1, plain_2]]  # one call for the batch; the declined row not in it
    assert effect_counts(runtime.engine) == {plain_1: 1, declined: 1, plain_2: 1}
    assert row(runtime, declined).status == Status.DONE
    assert row(runtime, failing).last_error == "RetryLater: the test says: not yet"


def test_a_set_based_apply_that_fails_as_a_whole_leaves_every_row_to_apply_alone(
    runtime, proc_settings
):
    batched, batches = batch_runtime(runtime, proc_settings)
    ids = stored(runtime, scripted_event(), scripted_event(script={"sink_batch": True}))
    assert process_pass(batched, ids) == {Outcome.DONE: 2}
    assert batches == []  # nothing of the failed batch call survived its savepoint
    assert effect_counts(runtime.engine) == dict.fromkeys(ids, 1)


def test_an_exception_returned_by_a_set_based_apply_fails_it_as_a_whole(runtime, proc_settings):
    """Outside the contract (Failed(error) is): the row is not taken as applied; the group
    is rolled back and every row applied alone."""
    batched, batches = batch_runtime(runtime, proc_settings)
    ids = stored(runtime, scripted_event(), scripted_event(script={"returns_error": True}))
    assert process_pass(batched, ids) == {Outcome.DONE: 2}
    assert effect_counts(runtime.engine) == dict.fromkeys(ids, 1)
    assert batches == [[ids[0]], [ids[0]]]  # in the batch, then in a savepoint: both undone


def test_every_row_of_a_batch_gets_its_own_json_outcome_line(runtime):
    import io
    import json
    import logging

    from outbox.logs import JsonFormatter

    one, other = scripted_event(), scripted_event()
    skipped = type(one)(**{**one.__dict__, "event_type": "nobody.cares"})
    broken = type(other)(**{**other.__dict__, "raw_body": b"{not json"})
    ids = stored(runtime, scripted_event(), scripted_event(), skipped, broken)
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("outbox.processors")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        assert process_pass(runtime, ids) == {Outcome.DONE: 2, Outcome.SKIPPED: 1, Outcome.DEAD: 1}
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert sorted(line["event_id"] for line in lines) == sorted(ids)
    by_id = {line["event_id"]: line for line in lines}
    assert [by_id[i]["outcome"] for i in ids] == ["done", "done", "skipped", "dead"]
    assert [by_id[i]["level"] for i in ids] == ["info", "info", "info", "warning"]
    assert by_id[ids[2]]["reason"] == "no handler for stripe nobody.cares"
    assert all(line["message"] == f"event {line['outcome']}" for line in lines)
    assert all(
        {"delivery_id", "attempt", "ms", "source", "event_type"} <= set(line) for line in lines
    )


def work_until_settled(runtime, ids: list[int]) -> Counter:
    """Passes, each followed by the sweeper's release of expired leases, until every row is
    done or dead; a pass whose worker died (WorkerDied) is counted as `died`."""
    outcomes: Counter = Counter()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if {row(runtime, i).status for i in ids} <= {Status.DONE, Status.DEAD}:
            break
        try:
            outcomes.update(process_pass(runtime, ids))
        except WorkerDied:
            outcomes["died"] += 1
        with transaction(runtime.sessions) as session:
            recovery.release_expired(session, now=utcnow(), policy=runtime.policy)
        time.sleep(0.05)
    return outcomes


def test_a_slow_provider_never_makes_rows_dead_and_each_row_spends_one_attempt(
    runtime, proc_settings
):
    short = runtimes.configure(
        proc_settings.model_copy(update={"lease_seconds": 4}), engine=runtime.engine
    )
    # Six reads of 0.8 s each: more than one lease's worth for a pass that claims them all.
    ids = stored(runtime, *(scripted_event(script={"prepare_sleep": 0.8}) for _ in range(6)))

    outcomes = work_until_settled(short, ids)

    assert outcomes[Outcome.DONE] == 6 and outcomes[Outcome.LEASE_LOST] == 0
    assert outcomes[Outcome.RELEASED] >= 1  # the rows a half-spent lease had no time for
    assert [(row(runtime, i).status, row(runtime, i).attempts) for i in ids] == [
        (Status.DONE, 1)
    ] * 6
    assert effect_counts(runtime.engine) == dict.fromkeys(ids, 1)


def test_a_row_that_kills_its_worker_ends_dead_and_the_rows_claimed_with_it_do_not(
    runtime, proc_settings
):
    runtime = runtimes.configure(
        proc_settings.model_copy(update={"lease_seconds": 1}), engine=runtime.engine
    )
    first, poison, last = stored(
        runtime, scripted_event(), scripted_event(script={"die": True}), scripted_event()
    )

    outcomes = work_until_settled(runtime, [first, poison, last])

    for innocent in (first, last):
        assert (row(runtime, innocent).status, row(runtime, innocent).attempts) == (Status.DONE, 1)
    assert effect_counts(runtime.engine) == {first: 1, last: 1}
    dead = row(runtime, poison)
    attempts = runtime.settings.retry_max_attempts
    assert (dead.status, dead.attempts) == (Status.DEAD, attempts)
    assert dead.last_error == f"worker died or lease expired {attempts + 1} times while applying it"
    assert outcomes["died"] == attempts + 1  # once among the others, then once per attempt alone
    with runtime.sessions() as session:
        failures = session.scalars(
            select(EventFailure.outcome).where(EventFailure.event_id == poison)
        ).all()
    assert failures == ["lease-expired"] * attempts + ["dead"]


def test_rows_without_a_set_based_apply_finish_in_the_batch_transaction(runtime):
    """Plain handlers' rows, skipped rows and a failing row: one transaction claims, and one
    applies, marks and records them all (a commit per row made mixed traffic slow)."""
    from sqlalchemy import event

    ids = stored(
        runtime,
        *(scripted_event() for _ in range(5)),
        scripted_event(script={"fail": "retry"}),
        *(replace(scripted_event(), event_type="push") for _ in range(3)),
    )
    commits: list[int] = []
    listener = lambda _conn: commits.append(1)  # noqa: E731
    event.listen(runtime.engine, "commit", listener)
    try:
        counts = process_pass(runtime, ids)
    finally:
        event.remove(runtime.engine, "commit", listener)
    assert counts == {Outcome.DONE: 5, Outcome.RETRY: 1, Outcome.SKIPPED: 3}
    assert len(commits) == 2  # the claim, then the batch (with the claim of the next rows)
    assert effect_counts(runtime.engine) == dict.fromkeys(ids[:5], 1)
    assert {row(runtime, i).last_error for i in ids[6:]} == {"no handler for stripe push"}


def test_a_batch_reads_the_accounts_of_a_set_based_handlers_rows_in_one_call(
    runtime, proc_settings
):
    from tests.processors.handlers import account_reads

    account_reads.clear()
    batched, _ = batch_runtime(runtime, proc_settings)
    ids = stored(runtime, *(scripted_event() for _ in range(3)))
    assert process_pass(batched, ids) == {Outcome.DONE: 3}
    assert account_reads == [ids]
