"""Subscriptions: one record per Stripe subscription, where old news never wins."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
from datetime import UTC, datetime, timedelta

import pytest
import respx

from domain.accounts import account_for_customer, link_customer
from domain.subscriptions import may_use_paid_features, subscription, subscriptions_of
from outbox.db import transaction
from outbox.handling import Failed, RetryLater
from tests.domain.billing_support import (
    NOW,
    STRIPE_BASE,
    deliver,
    invoice_object,
    seed,
    stripe_event,
    subscription_object,
    table_for,
)
from tests.fakes.stripe import FakeStripe

T0 = int(NOW.timestamp()) - 3600  #: seconds; Stripe `created` of a sequence's first event
GRACE = timedelta(days=3)
CUSTOMER = "cus_QXg1o8vcGmoR32"


@pytest.fixture
def table(database_url):
    return table_for(database_url)


@pytest.fixture
def account(sessions):
    seed(sessions, 1)
    with transaction(sessions) as s:
        link_customer(s, 1, CUSTOMER, now=NOW)
    return 1


def sub_event(kind, status, at, sub_id, **changes):
    return stripe_event(
        f"customer.subscription.{kind}",
        subscription_object(CUSTOMER, status, sub_id=sub_id, **changes),
        created=T0 + at,
    )


def invoice_event(kind, at, sub_id, **changes):
    return stripe_event(
        f"invoice.{kind}", invoice_object(CUSTOMER, sub_id, **changes), created=T0 + at
    )


def record(sessions, sub_id):
    with transaction(sessions) as s:
        row = subscription(s, sub_id)
        return None if row is None else row.as_dict(NOW, GRACE)


#: A subscription's life: signed up, first payment, renewal failed then recovered, cancelled
#: at period end, then deleted.
def renewal_then_cancel(sub_id):
    return [
        sub_event("created", "incomplete", 0, sub_id),
        invoice_event("paid", 10, sub_id, billing_reason="subscription_create"),
        sub_event("updated", "active", 11, sub_id),
        invoice_event("payment_failed", 20, sub_id),
        sub_event("updated", "past_due", 21, sub_id, period_end=1_900_000_000),
        sub_event(
            "updated",
            "active",
            30,
            sub_id,
            cancel_at_period_end=True,
            price="price_pro",
            period_end=1_900_000_000,
        ),
        sub_event(
            "deleted",
            "canceled",
            40,
            sub_id,
            cancel_at_period_end=True,
            price="price_pro",
            period_end=1_900_000_000,
        ),
    ]


#: A renewal that failed and was not paid yet: the account is in its grace period.
def failing_renewal(sub_id):
    return [
        sub_event("created", "active", 0, sub_id),
        invoice_event("paid", 1, sub_id, billing_reason="subscription_create"),
        sub_event("updated", "active", 5, sub_id, cancel_at_period_end=True),
        invoice_event("payment_failed", 20, sub_id),
        sub_event("updated", "past_due", 21, sub_id, period_end=1_900_000_000),
    ]


def test_each_subscription_event_keeps_the_record_current(sessions, table, account):
    sub_id = "sub_life"
    expected = [
        ("incomplete", False), ("active", True), ("active", True), ("past_due", True),
        ("past_due", True), ("active", True), ("canceled", False),
    ]  # fmt: skip
    for event, (status, paid) in zip(renewal_then_cancel(sub_id), expected, strict=True):
        deliver(sessions, table, event)
        deliver(sessions, table, event)  # a duplicate changes nothing
        row = record(sessions, sub_id)
        assert (row["status"], row["paid_features"]) == (status, paid), event.event_type
    assert row["price_id"] == "price_pro"
    assert row["cancel_at_period_end"] is True
    assert row["account_id"] == 1


#: Where each sequence ends: status, past due since (seconds after T0), cancel flag, price.
ENDS = {
    "renewal_then_cancel": ("canceled", None, True, "price_pro"),
    "failing_renewal": ("past_due", 20, False, "price_monthly"),
}


@pytest.mark.parametrize("sequence", [renewal_then_cancel, failing_renewal])
def test_out_of_order_delivery_in_every_order_ends_where_the_in_order_one_does(
    sessions, table, account, sequence
):
    in_order = sequence("sub_in_order")
    for event in in_order:
        deliver(sessions, table, event)
    want = record(sessions, "sub_in_order")
    status, since, cancel, price = ENDS[sequence.__name__]
    assert (want["status"], want["cancel_at_period_end"], want["price_id"]) == (
        status,
        cancel,
        price,
    )
    assert want["past_due_since"] == (
        None if since is None else datetime.fromtimestamp(T0 + since, UTC)
    )
    assert want["current_period_end"] == datetime.fromtimestamp(1_900_000_000, UTC)

    n_events = len(in_order)
    orders = list(itertools.permutations(range(n_events)))
    if n_events > 5:
        # Every one of the 5040 orders of seven events would take a minute: take the
        # orders that start with the first or the last event, and every 7th of those.
        orders = [order for order in orders if order[0] in (0, n_events - 1)][::7]
    for n, order in enumerate(orders):
        sub_id = f"sub_perm_{n}"
        events = sequence(sub_id)
        for index in order:
            deliver(sessions, table, events[index])
        got = record(sessions, sub_id)
        assert {**got, "subscription": None} == {**want, "subscription": None}, order


def test_an_older_event_does_not_overwrite_a_newer_state(sessions, table, account):
    deliver(sessions, table, sub_event("updated", "canceled", 50, "sub_x"))
    deliver(sessions, table, sub_event("updated", "active", 10, "sub_x"))
    deliver(sessions, table, invoice_event("paid", 60, "sub_x"))  # canceled is final
    assert record(sessions, "sub_x")["status"] == "canceled"
    deliver(sessions, table, sub_event("updated", "active", 5, "sub_y"))
    deliver(sessions, table, sub_event("updated", "past_due", 6, "sub_y"))
    deliver(sessions, table, sub_event("updated", "active", 5, "sub_y"))
    assert record(sessions, "sub_y")["status"] == "past_due"


def test_past_due_keeps_paid_features_until_the_grace_period_ends(sessions, table, account):
    deliver(sessions, table, sub_event("updated", "past_due", 0, "sub_due"))
    since = datetime.fromtimestamp(T0, UTC)
    with transaction(sessions) as s:
        assert may_use_paid_features(s, 1, now=since + GRACE - timedelta(seconds=1), grace=GRACE)
        assert not may_use_paid_features(s, 1, now=since + GRACE, grace=GRACE)
        assert not may_use_paid_features(s, 1, now=since, grace=timedelta(0))


@pytest.mark.parametrize(
    ("status", "paid"),
    [("active", True), ("trialing", True), ("canceled", False), ("unpaid", False),
     ("incomplete", False), ("incomplete_expired", False), ("paused", False)],
)  # fmt: skip
def test_which_statuses_may_use_paid_features(sessions, table, account, status, paid):
    deliver(sessions, table, sub_event("updated", status, 0, "sub_s"))
    with transaction(sessions) as s:
        assert may_use_paid_features(s, 1, now=NOW, grace=GRACE) is paid


def test_a_new_subscription_after_a_cancelled_one_gives_the_account_paid_features(
    sessions, table, account
):
    deliver(sessions, table, sub_event("deleted", "canceled", 0, "sub_old"))
    deliver(sessions, table, sub_event("created", "active", 100, "sub_new"))
    deliver(sessions, table, sub_event("updated", "canceled", 50, "sub_old"))
    with transaction(sessions) as s:
        assert may_use_paid_features(s, 1, now=NOW, grace=GRACE)
        assert [row.id for row in subscriptions_of(s, 1)] == ["sub_new", "sub_old"]


def test_a_subscription_of_an_unknown_customer_waits_for_its_account(sessions, table):
    seed(sessions)
    event = stripe_event(
        "customer.subscription.created",
        subscription_object(
            "cus_new", "active", sub_id="sub_new", metadata={"github_account_id": "9"}
        ),
        created=T0,
    )
    with pytest.raises(RetryLater, match="account 9 does not exist yet"):
        deliver(sessions, table, event)
    orphan = stripe_event("invoice.paid", invoice_object("cus_nobody", "sub_orphan"), created=T0)
    with pytest.raises(RetryLater, match="no account yet for Stripe customer cus_nobody"):
        deliver(sessions, table, orphan)
    seed(sessions, 9)
    deliver(sessions, table, event)
    with transaction(sessions) as s:
        assert subscription(s, "sub_new").account_id == 9
        from domain.accounts import account_for_customer

        assert account_for_customer(s, "cus_new").id == 9  # named both: linked


def test_a_one_off_invoice_changes_no_subscription(sessions, table, account):
    invoice = invoice_object(CUSTOMER, "sub_z")
    invoice["parent"] = None
    deliver(sessions, table, stripe_event("invoice.paid", invoice))
    assert record(sessions, "sub_z") is None


def test_with_the_api_the_current_subscription_is_fetched_instead_of_an_old_payload(
    sessions, database_url, account
):
    table = table_for(database_url, stripe_api_key="sk_test_x")
    stale = sub_event("updated", "active", 0, "sub_api")
    current = subscription_object(CUSTOMER, "past_due", sub_id="sub_api", price="price_pro")
    with respx.mock() as router:
        stripe = FakeStripe(router, api_key="sk_test_x")
        stripe.subscriptions["sub_api"] = current
        deliver(sessions, table, stale)
        deliver(sessions, table, invoice_event("paid", -100, "sub_api"))  # older still
    assert stripe.calls == [("GET", "/v1/subscriptions/sub_api")] * 2
    row = record(sessions, "sub_api")
    assert (row["status"], row["price_id"]) == ("past_due", "price_pro")


def sign_up(sub_id, status="incomplete"):
    """A sign-up as Stripe sends it, every event in one second: the subscription created,
    its first invoice paid, the subscription updated (absent for a trial)."""
    events = [
        sub_event("created", status, 0, sub_id),
        invoice_event("paid", 0, sub_id, billing_reason="subscription_create"),
    ]
    if status == "incomplete":
        events.append(sub_event("updated", "active", 0, sub_id))
    return events


def test_every_delivery_order_of_a_sign_up_in_one_second_ends_active(sessions, table, account):
    for n, order in enumerate(itertools.permutations(range(3))):
        sub_id = f"sub_signup_{n}"
        events = sign_up(sub_id)
        for index in order:
            deliver(sessions, table, events[index])
        row = record(sessions, sub_id)
        assert (row["status"], row["paid_features"]) == ("active", True), order


def test_a_first_invoice_paid_after_the_incomplete_object_makes_it_active_in_either_order(
    sessions, table, account
):
    for n, order in enumerate([(0, 1), (1, 0)]):
        sub_id = f"sub_paid_{n}"
        created = sub_event("created", "incomplete", 0, sub_id)
        paid = invoice_event("paid", 1, sub_id, billing_reason="subscription_create")
        for event in [(created, paid)[i] for i in order]:
            deliver(sessions, table, event)
        assert record(sessions, sub_id)["status"] == "active", order
        # An object of the invoice's second decides: the update Stripe sends next.
        tie = f"sub_tie_paid_{n}"
        created, paid = sign_up(tie)[:2]
        for event in [(created, paid)[i] for i in order]:
            deliver(sessions, table, event)
        assert record(sessions, tie)["status"] == "incomplete", order


@pytest.mark.parametrize("invoice_delay", [0, 1])
def test_a_trial_stays_trialing_after_its_zero_first_invoice_in_either_order(
    sessions, table, account, invoice_delay
):
    for n, order in enumerate([(0, 1), (1, 0)]):
        sub_id = f"sub_trial_{n}"
        created = sub_event("created", "trialing", 0, sub_id)
        paid = invoice_event("paid", invoice_delay, sub_id, billing_reason="subscription_create")
        for event in [(created, paid)[i] for i in order]:
            deliver(sessions, table, event)
        row = record(sessions, sub_id)
        # A trial has paid features, as Stripe's entitlements treat it as active access.
        assert (row["status"], row["paid_features"]) == ("trialing", True), order


def test_same_second_subscription_objects_are_ranked_by_the_lifecycle_not_arrival(
    sessions, table, account
):
    for n, order in enumerate([(0, 1), (1, 0)]):
        sub_id = f"sub_tie_{n}"
        events = [
            sub_event("updated", "active", 7, sub_id, price="price_a"),
            sub_event("updated", "past_due", 7, sub_id, price="price_b"),
        ]
        for index in order:
            deliver(sessions, table, events[index])
        row = record(sessions, sub_id)
        assert (row["status"], row["price_id"]) == ("past_due", "price_b"), order
        assert row["past_due_since"] == datetime.fromtimestamp(T0 + 7, UTC)


@pytest.mark.parametrize(
    ("status", "billing_reason"),
    [
        ("active", "subscription_create"),  # a first invoice: the object says where it is
        ("active", "subscription_update"),  # not a renewal
        ("active", "manual"),
        ("trialing", "subscription_cycle"),  # a trial is not past due
        ("incomplete", "subscription_create"),  # the first invoice failed: still incomplete
    ],
)
def test_a_failed_invoice_that_is_not_a_renewal_of_a_paying_subscription_changes_nothing(
    sessions, table, account, status, billing_reason
):
    deliver(sessions, table, sub_event("created", status, 0, "sub_f"))
    failed = invoice_event("payment_failed", 5, "sub_f", billing_reason=billing_reason)
    deliver(sessions, table, failed)
    assert record(sessions, "sub_f")["status"] == status


def test_a_failed_renewal_makes_an_active_subscription_past_due_until_an_object_says_otherwise(
    sessions, table, account
):
    deliver(sessions, table, sub_event("created", "active", 0, "sub_r"))
    deliver(sessions, table, invoice_event("payment_failed", 9, "sub_r"))
    assert record(sessions, "sub_r")["status"] == "past_due"
    deliver(sessions, table, sub_event("updated", "active", 9, "sub_r"))  # same second
    assert record(sessions, "sub_r")["status"] == "active"


def test_with_the_api_a_state_fetched_before_a_cancellation_never_overwrites_it(
    sessions, database_url, account
):
    """Two events of one subscription, the older one's state read before the newer one's:
    the stale read is applied last, and must neither revive a final status nor replace
    a state read later."""
    table = table_for(database_url, stripe_api_key="sk_test_x")
    handler = table[("stripe", "customer.subscription.updated")]
    older = sub_event("updated", "active", 0, "sub_api")
    newer = sub_event("deleted", "canceled", 1, "sub_api")
    with respx.mock(base_url=STRIPE_BASE) as stripe:
        route = stripe.get("/v1/subscriptions/sub_api")
        route.respond(json=subscription_object(CUSTOMER, "active", sub_id="sub_api"))
        stale = handler.prepare(older)
        route.respond(json=subscription_object(CUSTOMER, "canceled", sub_id="sub_api"))
        deliver(sessions, table, newer)
    with transaction(sessions) as s:
        handler.apply(s, older, stale)
    assert record(sessions, "sub_api")["status"] == "canceled"

    early = _about("sub_late", older)
    later = _about("sub_late", dataclasses.replace(older, now=NOW + timedelta(minutes=1)))
    with respx.mock(base_url=STRIPE_BASE) as stripe:
        route = stripe.get("/v1/subscriptions/sub_late")
        route.respond(json=subscription_object(CUSTOMER, "active", sub_id="sub_late"))
        read_early = handler.prepare(early)
        route.respond(json=subscription_object(CUSTOMER, "past_due", sub_id="sub_late"))
        read_later = handler.prepare(later)
    with transaction(sessions) as s:
        handler.apply(s, later, read_later)
        handler.apply(s, early, read_early)  # its attempt began a minute before
    assert record(sessions, "sub_late")["status"] == "past_due"


def _about(sub_id, event):
    """`event` about another subscription, as another delivery."""
    obj = subscription_object(CUSTOMER, "active", sub_id=sub_id)
    payload = {**event.payload, "data": {"object": obj}}
    return dataclasses.replace(event, id=event.id + 10**6, payload=payload)


def _batch_of_sign_ups(suffix, named_account):
    """Events of a batch: a sign-up of customer `cus_<suffix>` (object, first invoice, failed
    renewal), a subscription naming `named_account` with a new customer, one naming an
    account that does not exist."""
    customer = f"cus_{suffix}"
    named = subscription_object(f"cus_named_{suffix}", "active", sub_id=f"sub_named_{suffix}")
    named["metadata"] = {"github_account_id": str(named_account)}
    missing = subscription_object(f"cus_none_{suffix}", "active", sub_id=f"sub_none_{suffix}")
    missing["metadata"] = {"github_account_id": "99"}
    sub = f"sub_{suffix}"
    events = [
        stripe_event(
            "customer.subscription.created",
            subscription_object(customer, "incomplete", sub_id=sub),
            created=T0,
        ),
        stripe_event(
            "invoice.paid",
            invoice_object(customer, sub, billing_reason="subscription_create"),
            created=T0 + 1,
        ),
        stripe_event("customer.subscription.created", named, created=T0 + 2),
        stripe_event("customer.subscription.created", missing, created=T0 + 3),
        stripe_event(
            "invoice.payment_failed",
            invoice_object(customer, sub, billing_reason="subscription_cycle"),
            created=T0 + 4,
        ),
    ]
    return [dataclasses.replace(event, id=n + 1) for n, event in enumerate(events)]


def test_subscription_and_invoice_events_applied_together_end_as_applied_one_by_one(
    sessions, table
):
    """One apply_subscription_events call over a batch's events writes what applying them
    one after the other writes (rows, customer links); the one whose account does not
    exist yet fails alone and writes nothing."""
    from domain.subscription_events import apply_subscription_events

    seed(sessions, 1, 2, 3, 4)
    with transaction(sessions) as s:
        link_customer(s, 1, "cus_a", now=NOW)
        link_customer(s, 3, "cus_b", now=NOW)
    together = _batch_of_sign_ups("a", 2)
    with transaction(sessions) as s:
        results = apply_subscription_events(s, [(event, None) for event in together])
    assert results[:3] == [None] * 3 and results[4] is None
    assert isinstance(results[3], Failed) and isinstance(results[3].error, RetryLater)
    for event in _batch_of_sign_ups("b", 4):
        with contextlib.suppress(RetryLater):
            deliver(sessions, table, event)

    def rows(suffix):
        found = [record(sessions, f"sub{name}_{suffix}") for name in ("", "_named", "_none")]
        return [
            None if row is None else {k: v for k, v in row.items() if k != "subscription"}
            for row in found
        ]

    a, b = rows("a"), rows("b")
    assert a[2] is None and b[2] is None
    assert a[0] == {**b[0], "account_id": 1} and a[0]["status"] == "past_due"
    assert a[1] == {**b[1], "account_id": 2}
    with transaction(sessions) as s:
        assert account_for_customer(s, "cus_named_a").id == 2
        assert account_for_customer(s, "cus_named_b").id == 4
