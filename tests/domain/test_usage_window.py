"""Usage reports and Stripe's identifier window: a report that may have reached Stripe is
never sent again on its own once Stripe may have forgotten its identifier."""

from __future__ import annotations

from datetime import datetime, timedelta

from domain.usage import UsageRecord
from processors.jobs import UsageOutcome
from tests.domain.jobs_world import World

HOUR = 3600.0


def reported_job(world: World) -> UsageRecord:
    world.install()
    world.link_customer()
    world.work(world.submit())
    [record] = world.usage()
    return record


def report_until_settled(world: World, record_id: int, hours: float) -> list[datetime]:
    """Report whenever due, an hour apart, for `hours`: the times a request was sent."""
    sent: list[datetime] = []
    for _ in range(int(hours)):
        before = len(world.stripe.meter_requests)
        world.report(record_id)
        if len(world.stripe.meter_requests) > before:
            sent.append(world.now)
        world.later(HOUR)
    return sent


def test_a_report_that_may_have_reached_stripe_stops_for_an_operator_before_the_window_ends(
    world: World,
) -> None:
    record = reported_job(world)
    first = world.now
    # Stripe keeps the event and its answer is lost, then Stripe is down for over a day.
    world.stripe.fail("POST", "/meter_events", status=500, store=True)
    world.stripe.fail("POST", "/meter_events", status=503, times=40)

    sent = report_until_settled(world, record.id, hours=30)

    window = timedelta(hours=world.settings.usage_resend_window_hours)
    assert sent[0] == first and sent[-1] < first + window
    [stopped] = world.usage()
    assert stopped.reported_at is None and stopped.next_attempt_at is None
    assert stopped.needs_operator_at is not None and stopped.uncertain_since == first
    assert (stopped.last_error or "").startswith("needs an operator: an attempt may have reached")
    world.stripe.meter_events.clear()  # a day on, Stripe has forgotten the identifier
    world.later(48 * HOUR)
    assert world.report(record.id) is UsageOutcome.NOT_DUE  # so it is never sent blindly
    assert len(world.stripe.meter_requests) == len(sent)


def test_definite_refusals_never_start_the_window(world: World) -> None:
    record = reported_job(world)
    # Rate limited for over a day: Stripe records nothing.
    world.stripe.fail("POST", "/meter_events", status=429, times=18)

    sent = report_until_settled(world, record.id, hours=60)

    [reported] = world.usage()
    assert reported.reported_at is not None and reported.needs_operator_at is None
    assert sent[-1] - sent[0] > timedelta(hours=24)
    assert len(world.stripe.meter_events) == 1


def test_an_uncertain_attempt_answered_already_exists_within_the_window_is_reported(
    world: World,
) -> None:
    record = reported_job(world)
    world.stripe.fail("POST", "/meter_events", status=500, store=True)

    assert world.report(record.id) is UsageOutcome.RETRY
    world.later(HOUR)
    assert world.report(record.id) is UsageOutcome.ALREADY_REPORTED
    assert len(world.stripe.meter_events) == 1
