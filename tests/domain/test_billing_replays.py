"""Every billing event type, delivered again and replayed: nothing changes the second time."""

from __future__ import annotations

from dataclasses import replace

import pytest
from sqlalchemy import select

from domain.accounts import link_customer
from domain.ledger_tables import CreditEntry
from domain.purchases import CreditPurchase
from domain.subscriptions import Subscription
from outbox.db import transaction
from tests.domain.billing_support import (
    NOW,
    PRO,
    charge,
    checkout_session,
    deliver,
    dispute,
    invoice_object,
    seed,
    stripe_event,
    subscription_object,
    table_for,
)

CUSTOMER = "cus_QXg1o8vcGmoR32"
PURCHASE = checkout_session(1, pack=PRO, session_id="cs_replayed", payment_intent="pi_replayed")

#: (event type, its object): one of each type billing applies.
EVENTS = {
    "checkout.session.completed": PURCHASE,
    "checkout.session.async_payment_succeeded": PURCHASE,
    "charge.refunded": charge("pi_replayed", 1499, 700),
    "charge.dispute.created": dispute("pi_replayed", 1499, "needs_response"),
    "charge.dispute.funds_withdrawn": dispute("pi_replayed", 700, "under_review"),
    "charge.dispute.closed": dispute("pi_replayed", 1499, "lost"),
    "customer.subscription.created": subscription_object(CUSTOMER, "active", sub_id="sub_r"),
    "customer.subscription.updated": subscription_object(CUSTOMER, "past_due", sub_id="sub_r"),
    "customer.subscription.deleted": subscription_object(CUSTOMER, "canceled", sub_id="sub_r"),
    "invoice.paid": invoice_object(CUSTOMER, "sub_r"),
    "invoice.payment_failed": invoice_object(CUSTOMER, "sub_r"),
}


def effects(sessions) -> tuple:
    """Everything billing has written, as comparable values."""
    with transaction(sessions) as s:
        entries = [(e.key, e.amount, e.debt_change) for e in s.scalars(select(CreditEntry))]
        bought = [(p.checkout_session_id, p.credits, p.refunded_credits, p.refunded_amount)
                  for p in s.scalars(select(CreditPurchase))]  # fmt: skip
        subs = [(r.id, r.status, r.status_at, r.details_at, r.past_due_since, r.price_id)
                for r in s.scalars(select(Subscription))]  # fmt: skip
    return sorted(entries), bought, subs


@pytest.mark.parametrize("event_type", sorted(EVENTS))
def test_a_duplicate_delivery_and_a_replay_of_each_event_type_change_nothing(
    sessions, database_url, event_type
):
    table = table_for(database_url)
    seed(sessions, 1, welcome="50")
    with transaction(sessions) as s:
        link_customer(s, 1, CUSTOMER, now=NOW)
    if event_type.startswith("charge."):
        deliver(sessions, table, stripe_event("checkout.session.completed", PURCHASE))
    event = stripe_event(event_type, EVENTS[event_type])
    before = effects(sessions)
    deliver(sessions, table, event)
    once = effects(sessions)
    assert once != before  # the first delivery did something
    deliver(sessions, table, event)  # the same delivery again
    deliver(sessions, table, replace(event, id=event.id + 1, delivery_id=event.delivery_id + "b"))
    assert effects(sessions) == once
