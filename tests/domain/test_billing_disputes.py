"""Disputes take a pack payment's credits back while the funds are withdrawn, give them back
when won, keep them when lost: each once, whatever the order, never more than was granted."""

from __future__ import annotations

import itertools
from decimal import Decimal

import pytest
from typer.testing import CliRunner

from domain import balances, ledger
from domain.disputes import CreditDispute
from domain.purchases import purchase_for_payment
from outbox.cli import app
from outbox.db import transaction
from outbox.handling import RetryLater
from outbox.settings import get_settings
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

CREATED = "charge.dispute.created"
WITHDRAWN = "charge.dispute.funds_withdrawn"
CLOSED = "charge.dispute.closed"
CENTS = PACK_CENTS[PRO]
D = Decimal


@pytest.fixture
def table(database_url):
    return table_for(database_url)


def send(sessions, table, event_type, payment_intent, status, amount=CENTS, dispute_id="dp_1"):
    obj = dispute(payment_intent, amount, status, dispute_id=dispute_id)
    deliver(sessions, table, stripe_event(event_type, obj))


def standing(sessions, account_id=1):
    """(balance, available, debt)."""
    with transaction(sessions) as s:
        now = balances.standing(s, account_id)
        return now.balance, now.available, now.debt


def keys(sessions, account_id=1):
    with transaction(sessions) as s:
        return [e.key for e in balances.history(s, account_id)]


def test_a_chargeback_takes_the_pack_back_once_and_a_won_dispute_gives_it_back_once(
    sessions, table
):
    seed(sessions, 1, welcome="10")
    pi = bought_pro(sessions, table)
    for _ in range(2):
        send(sessions, table, CREATED, pi, "needs_response")
        send(sessions, table, WITHDRAWN, pi, "needs_response")
    assert standing(sessions) == (D(10), D(10), D(0))
    for _ in range(2):
        send(sessions, table, CLOSED, pi, "won")
    send(sessions, table, CREATED, pi, "needs_response")  # old news after the end
    assert standing(sessions) == (D(95), D(95), D(0))
    assert keys(sessions)[-2:] == ["dispute:dp_1", "dispute-won:dp_1"]


def test_a_dispute_of_credits_already_spent_is_debt_and_winning_pays_it(sessions, table):
    seed(sessions, 1)
    pi = bought_pro(sessions, table)
    with transaction(sessions) as s:
        ledger.spend(s, 1, 80, key="job:1", reason="job", now=NOW)
    send(sessions, table, CREATED, pi, "needs_response")
    assert standing(sessions) == (D(0), D(0), D(80))
    send(sessions, table, CLOSED, pi, "won")
    assert standing(sessions) == (D(5), D(5), D(0))


def test_a_lost_dispute_keeps_the_credits_taken(sessions, table):
    seed(sessions, 1, welcome="10")
    pi = bought_pro(sessions, table)
    send(sessions, table, CREATED, pi, "needs_response")
    send(sessions, table, CLOSED, pi, "lost")
    send(sessions, table, CLOSED, pi, "lost")
    assert standing(sessions) == (D(10), D(10), D(0))
    assert keys(sessions)[-1] == "dispute:dp_1"


def test_an_inquiry_takes_nothing_until_the_funds_are_withdrawn(sessions, table):
    seed(sessions, 1)
    pi = bought_pro(sessions, table)
    send(sessions, table, CREATED, pi, "warning_needs_response")
    assert standing(sessions) == (D(85), D(85), D(0))
    send(sessions, table, WITHDRAWN, pi, "needs_response")  # escalated to a chargeback
    send(sessions, table, CREATED, pi, "warning_needs_response")  # late: gives nothing back
    assert standing(sessions) == (D(0), D(0), D(0))


def test_an_inquiry_closed_without_a_chargeback_takes_nothing(sessions, table):
    seed(sessions, 1)
    pi = bought_pro(sessions, table)
    send(sessions, table, CLOSED, pi, "warning_closed")
    send(sessions, table, CREATED, pi, "warning_needs_response")
    assert standing(sessions) == (D(85), D(85), D(0))
    assert keys(sessions) == [f"pack:{_session_of(sessions, pi)}"]


#: Deliveries of one dispute (event type, status), and where each ending leaves 10 + 85.
WON = [(CREATED, "needs_response"), (CLOSED, "won")]
LOST = [(CREATED, "needs_response"), (CLOSED, "lost")]


@pytest.mark.parametrize(
    ("deliveries", "ending"),
    [(order, (D(95), D(0)) if story is WON else (D(10), D(0)))
     for story in (WON, LOST)
     for order in itertools.permutations([*story, story[0], story[1]])],
)  # fmt: skip
def test_every_order_and_duplicate_of_a_dispute_ends_as_stripe_ends(
    sessions, table, deliveries, ending
):
    seed(sessions, 1, welcome="10")
    pi = bought_pro(sessions, table)
    for event_type, status in deliveries:
        send(sessions, table, event_type, pi, status)
    balance, _, debt = standing(sessions)
    assert (balance, debt) == ending
    disputed = [k for k in keys(sessions) if k.startswith("dispute")]
    assert len(disputed) == len(set(disputed))  # each entry once


def test_a_partial_dispute_takes_its_share(sessions, table):
    seed(sessions, 1)
    pi = bought_pro(sessions, table)
    send(sessions, table, CREATED, pi, "under_review", amount=500)  # 500/1499 of 85
    assert standing(sessions)[0] == D(85) - D("28.3522")


def test_refunds_and_disputes_of_one_payment_never_take_more_than_it_granted(sessions, table):
    seed(sessions, 1, welcome="10")
    pi = bought_pro(sessions, table)
    deliver(sessions, table, stripe_event("charge.refunded", charge(pi, CENTS, 1000)))
    send(sessions, table, CREATED, pi, "needs_response", amount=CENTS)  # more than is left
    assert standing(sessions) == (D(10), D(10), D(0))
    deliver(sessions, table, stripe_event("charge.refunded", charge(pi, CENTS, CENTS)))
    assert standing(sessions) == (D(10), D(10), D(0))
    send(sessions, table, CLOSED, pi, "won")  # the refund still takes the whole pack
    assert standing(sessions) == (D(10), D(10), D(0))
    with transaction(sessions) as s:
        purchase = purchase_for_payment(s, pi)
        assert purchase.taken_back == purchase.credits == D(85)


def test_a_won_dispute_gives_back_only_what_no_refund_takes(sessions, table):
    seed(sessions, 1)
    pi = bought_pro(sessions, table)
    send(sessions, table, CREATED, pi, "needs_response")
    deliver(sessions, table, stripe_event("charge.refunded", charge(pi, CENTS, 500)))
    assert standing(sessions)[0] == D(0)
    send(sessions, table, CLOSED, pi, "won")
    assert standing(sessions)[0] == D(85) - D("28.3522")


def test_a_dispute_before_its_purchase_is_recorded_waits_and_others_are_ignored(sessions, table):
    seed(sessions, 1, welcome="10")
    obj = checkout_session(1, pack=PRO)
    early = stripe_event(CREATED, dispute(obj["payment_intent"], CENTS, "needs_response"))
    with pytest.raises(RetryLater, match="no credit purchase recorded yet"):
        deliver(sessions, table, early)
    deliver(sessions, table, stripe_event(CREATED, dispute(None, CENTS, "needs_response")))
    deliver(sessions, table, stripe_event("checkout.session.completed", obj))
    deliver(sessions, table, early)
    assert standing(sessions) == (D(10), D(10), D(0))
    with transaction(sessions) as s:
        [row] = s.query(CreditDispute).all()
        assert (row.dispute_id, row.status, row.taken, row.closed) == (
            "dp_test_1", "needs_response", D(85), False,
        )  # fmt: skip


def test_credits_history_shows_what_a_dispute_took_and_gave_back(
    sessions, table, database_url, monkeypatch
):
    seed(sessions, 1)
    pi = bought_pro(sessions, table)
    send(sessions, table, CREATED, pi, "needs_response", dispute_id="dp_[bold]x")
    send(sessions, table, CLOSED, pi, "won", dispute_id="dp_[bold]x")
    monkeypatch.setenv("DATABASE_URL", database_url)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["credits", "history", "1", "--json"])
        shown = CliRunner().invoke(app, ["credits", "history", "1"], terminal_width=300)
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0 and shown.exit_code == 0, result.output
    reasons = [line for line in result.stdout.splitlines() if "dispute" in line]
    assert "dispute dp_[bold]x (needs_response) of Pro" in reasons[0]
    assert "85 credits taken back" in reasons[0]
    assert "dispute dp_[bold]x (won)" in reasons[1] and "85 credits given back" in reasons[1]
    assert "dispute-won:dp_[bold]x" in shown.output


def _session_of(sessions, payment_intent):
    with transaction(sessions) as s:
        return purchase_for_payment(s, payment_intent).checkout_session_id
