"""charge.refunded takes the refunded share of a pack back, once, and never below zero."""

from __future__ import annotations

import contextlib
import re
from decimal import Decimal

import pytest
import respx
from sqlalchemy import select

from domain import balances, holds, ledger
from domain.purchases import purchase_for_session
from outbox.db import transaction
from outbox.handling import Failed, PermanentFailure, RetryLater
from tests.domain.billing_support import (
    NOW,
    PACK_CENTS,
    PRO,
    bought_pro,
    charge,
    checkout_session,
    deliver,
    dispute,
    seed,
    stripe_event,
    table_for,
)
from tests.fakes.stripe import FakeStripe

REFUNDED = "charge.refunded"
D = Decimal


@pytest.fixture
def table(database_url):
    return table_for(database_url)


def refund(sessions, table, payment_intent, refunded, cents=PACK_CENTS[PRO]):
    event = stripe_event(REFUNDED, charge(payment_intent, cents, refunded))
    deliver(sessions, table, event)
    return event


def standing(sessions, account_id=1):
    with transaction(sessions) as s:
        return balances.balance(s, account_id), balances.debt(s, account_id)


def test_a_full_refund_takes_the_whole_pack_back_once(sessions, table):
    seed(sessions, 1, welcome="10")
    pi = bought_pro(sessions, table)
    event = refund(sessions, table, pi, 1499)
    deliver(sessions, table, event)  # redelivered
    refund(sessions, table, pi, 1499)  # the same refund state, as another event
    assert standing(sessions) == (D(10), D(0))


def test_partial_refunds_take_back_their_cumulative_share_in_any_order(sessions, table):
    seed(sessions, 1)
    pi = bought_pro(sessions, table)
    refund(sessions, table, pi, 500)  # 500/1499 of 85 credits
    assert standing(sessions)[0] == D(85) - D("28.3522")
    refund(sessions, table, pi, 1499)
    refund(sessions, table, pi, 500)  # old news, after the newer state: takes nothing more
    assert standing(sessions) == (D(0), D(0))
    with transaction(sessions) as s:
        keys = [e.key for e in balances.history(s, 1)]
    assert keys[1:] == [f"refund:ch_{pi}:500", f"refund:ch_{pi}:1499"]


def test_a_refund_larger_than_the_balance_leaves_a_debt_later_purchases_pay_first(sessions, table):
    seed(sessions, 1)
    pi = bought_pro(sessions, table)
    with transaction(sessions) as s:
        ledger.spend(s, 1, 80, key="job:1", reason="jobs", now=NOW)
    refund(sessions, table, pi, 1499)
    assert standing(sessions) == (D(0), D(80))
    bought_pro(sessions, table)  # 85 credits: 80 pay the debt, 5 reach the balance
    assert standing(sessions) == (D(5), D(0))


def test_a_refund_never_takes_credits_reserved_by_a_hold(sessions, table):
    seed(sessions, 1)
    pi = bought_pro(sessions, table)
    with transaction(sessions) as s:
        holds.hold(s, 1, 30, key="hold:job:1", now=NOW)
    refund(sessions, table, pi, 1499)
    with transaction(sessions) as s:
        assert (balances.balance(s, 1), balances.available(s, 1), balances.debt(s, 1)) == (
            30,
            0,
            30,
        )
        assert holds.capture_hold(s, "hold:job:1", ledger_key="job:1", reason="job", now=NOW)
        assert balances.balance(s, 1) == 0


def test_refunded_credits_a_job_held_are_never_spendable_once_the_job_fails(sessions, table):
    seed(sessions, 1)
    pi = bought_pro(sessions, table)
    with transaction(sessions) as s:
        holds.hold(s, 1, 85, key="hold:job:1", now=NOW)
    refund(sessions, table, pi, 1499)  # nothing available: all 85 become debt
    with transaction(sessions) as s:
        assert holds.release_hold(s, "hold:job:1", now=NOW)  # the job failed
        assert not holds.release_hold(s, "hold:job:1", now=NOW)
    with transaction(sessions) as s:
        assert (balances.balance(s, 1), balances.available(s, 1), balances.debt(s, 1)) == (0, 0, 0)
        assert balances.history(s, 1)[-1].key == "settle:hold:job:1"
        with pytest.raises(ledger.InsufficientCredits):
            holds.hold(s, 1, 1, key="hold:job:2", now=NOW)


def test_a_released_hold_pays_the_debt_and_frees_only_what_was_not_refunded(sessions, table):
    seed(sessions, 1)
    pi = bought_pro(sessions, table)
    with transaction(sessions) as s:
        holds.hold(s, 1, 60, key="hold:job:1", now=NOW)
    refund(sessions, table, pi, 750, cents=1500)  # 42.5 credits: 25 available, 17.5 as debt
    with transaction(sessions) as s:
        assert (balances.available(s, 1), balances.debt(s, 1)) == (0, D("17.5"))
        holds.release_hold(s, "hold:job:1", now=NOW)
    with transaction(sessions) as s:
        assert (balances.balance(s, 1), balances.available(s, 1), balances.debt(s, 1)) == (
            D("42.5"), D("42.5"), 0,
        )  # fmt: skip
        settle = balances.history(s, 1)[-1]
        assert (settle.amount, settle.debt_change) == (D("-17.5"), D("-17.5"))


def test_a_hold_released_with_no_debt_writes_no_entry(sessions, table):
    seed(sessions, 1)
    bought_pro(sessions, table)
    with transaction(sessions) as s:
        holds.hold(s, 1, 60, key="hold:job:1", now=NOW)
        holds.release_hold(s, "hold:job:1", now=NOW)
    with transaction(sessions) as s:
        assert balances.available(s, 1) == 85 and len(balances.history(s, 1)) == 1


def test_a_refund_before_its_purchase_is_recorded_waits_for_it(sessions, table):
    seed(sessions, 1)
    obj = checkout_session(1, pack=PRO)
    early = stripe_event(REFUNDED, charge(obj["payment_intent"], 1499, 1499))
    with pytest.raises(RetryLater, match="no credit purchase recorded yet"):
        deliver(sessions, table, early)
    deliver(sessions, table, stripe_event("checkout.session.completed", obj))
    deliver(sessions, table, early)
    assert standing(sessions) == (D(0), D(0))
    with transaction(sessions) as s:
        purchase = purchase_for_session(s, obj["id"])
        assert (purchase.refunded_amount, purchase.refunded_credits) == (1499, D(85))


def test_a_refund_of_a_subscription_invoice_is_not_a_pack_refund(sessions, table):
    seed(sessions, 1, welcome="10")
    deliver(sessions, table, stripe_event(REFUNDED, charge("pi_inv", 2000, 2000, invoice="in_1")))
    deliver(sessions, table, stripe_event(REFUNDED, charge(None, 2000, 2000)))
    assert standing(sessions) == (D(10), D(0))


def test_with_the_api_a_charge_no_checkout_made_is_left_alone(sessions, database_url):
    seed(sessions, 1, welcome="10")
    table = table_for(database_url, stripe_api_key="sk_test_x")
    with respx.mock() as router:
        stripe = FakeStripe(router, api_key="sk_test_x")
        stripe.add_checkout_session({"id": "cs_paid", "payment_intent": "pi_paid"})
        deliver(sessions, table, stripe_event(REFUNDED, charge("pi_other", 2000, 2000)))
    assert stripe.calls == [("GET", "/v1/checkout/sessions")]
    assert standing(sessions) == (D(10), D(0))


def _refunds_of_a_batch(sessions, table, account_id):
    """One account's refund states as a batch meets them: three of one payment (500, all,
    then the older 500 again), all of a payment a dispute already took back half of, both
    with a job's credits spent (debt) and held; then a refund of a purchase not recorded
    yet, one of a subscription invoice, and a malformed one."""
    seed(sessions, account_id)
    first = bought_pro(sessions, table, account_id)
    second = bought_pro(sessions, table, account_id)
    withdrawn = dispute(second, 750, "needs_response", dispute_id=f"dp_{second}")
    deliver(sessions, table, stripe_event("charge.dispute.funds_withdrawn", withdrawn))
    with transaction(sessions) as s:
        ledger.spend(s, account_id, 60, key=f"job:{account_id}", reason="jobs", now=NOW)
        holds.hold(s, account_id, 30, key=f"hold:job:{account_id}", now=NOW)
    unrecorded = checkout_session(account_id, pack=PRO)["payment_intent"]
    malformed = charge(first, 1499, 1499)
    del malformed["amount_refunded"]
    charges = [
        charge(first, 1499, 500),
        charge(first, 1499, 1499),
        charge(second, 1499, 1499),
        charge(unrecorded, 1499, 1499),
        charge("pi_inv", 2000, 2000, invoice=f"in_{account_id}"),
        malformed,
        charge(first, 1499, 500),
    ]
    return [stripe_event(REFUNDED, obj) for obj in charges]


def _no_ids(text):
    """The text without Stripe object ids and account numbers (each batch has its own)."""
    return re.sub(r"\b(cs|pi|dp|ch)_\w+|\d+$", "·", text)


def _ledger_of(sessions, account_id):
    """The account's standing, its entries (without the payments' ids) and its purchases."""
    from domain.purchases import CreditPurchase

    with transaction(sessions) as s:
        entries = [
            (e.amount, e.debt_change, _no_ids(e.reason), _no_ids(e.key))
            for e in balances.history(s, account_id)
        ]
        bought = s.scalars(
            select(CreditPurchase)
            .where(CreditPurchase.account_id == account_id)
            .order_by(CreditPurchase.id)
        )
        rows = [(p.refunded_amount, p.refunded_credits, p.disputed_credits) for p in bought]
        return balances.standing(s, account_id), entries, rows


def test_refunds_applied_together_end_as_applied_one_by_one(sessions, table):
    """One apply_many over a batch's refunds takes back, as debt and from the balance, what
    applying them one after the other does, with the holds and a dispute of the same
    payment in play; those that cannot apply fail alone and write nothing."""
    handler = table[("stripe", REFUNDED)]
    assert handler.apply_many is not None
    together = _refunds_of_a_batch(sessions, table, 1)
    with transaction(sessions) as s:
        results = handler.apply_many(s, [(event, None) for event in together])
    assert [type(r.error if isinstance(r, Failed) else r).__name__ for r in results] == [
        "NoneType", "NoneType", "NoneType", "RetryLater", "NoEffect", "PermanentFailure",
        "NoneType",
    ]  # fmt: skip
    assert [isinstance(r, Failed) for r in results] == [False] * 3 + [True, False, True, False]
    for event in _refunds_of_a_batch(sessions, table, 2):
        with contextlib.suppress(RetryLater, PermanentFailure):
            deliver(sessions, table, event)

    applied_together, one_by_one = _ledger_of(sessions, 1), _ledger_of(sessions, 2)
    assert applied_together == one_by_one
    standing_now, entries, _ = applied_together
    assert standing_now.debt > 0 and len(entries) == 7  # 2 packs, a dispute, a spend, 3 refunds


def test_the_accounts_of_a_batch_of_refunds_are_read_at_once_as_one_by_one(sessions, table):
    """payment_accounts_many: each refund's purchase's account, every payment in one read;
    none for a payment that bought no recorded pack, the same as payment_accounts."""
    from domain.billing_accounts import payment_accounts, payment_accounts_many

    seed(sessions, 1, 2)
    paid = [bought_pro(sessions, table, account_id) for account_id in (1, 2)]
    cents = PACK_CENTS[PRO]
    refunds = [stripe_event(REFUNDED, charge(pi, cents, cents // 2)) for pi in [*paid, "pi_none"]]
    with transaction(sessions) as s:
        found = payment_accounts_many(s, [(event, None) for event in refunds])
        assert found == [[1], [2], []]
        assert found == [payment_accounts(s, event, None) for event in refunds]
