"""Property: any sequence of purchases, refunds, spends, duplicate deliveries and replays
leaves the balance where the money rules say, and never below zero."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from decimal import ROUND_HALF_UP, Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain import balances, ledger
from domain.account_opening import ensure_account
from domain.credits import QUANTUM
from domain.ledger import InsufficientCredits
from outbox.db import transaction
from outbox.handling import EventContext, RetryLater
from tests.domain.billing_support import (
    NOW,
    PACK_CENTS,
    PACK_CREDITS,
    charge,
    checkout_session,
    deliver,
    seed,
    stripe_event,
    table_for,
)

PACKS = sorted(PACK_CREDITS)
SESSIONS = 3  #: checkout sessions a sequence may buy (so refunds and duplicates meet them)
_accounts = itertools.count(10_000)

buy = st.tuples(st.just("buy"), st.integers(0, SESSIONS - 1), st.sampled_from(PACKS),
                st.sampled_from(["checkout.session.completed",
                                 "checkout.session.async_payment_succeeded"]))  # fmt: skip
refund = st.tuples(st.just("refund"), st.integers(0, SESSIONS - 1), st.integers(1, 100))
spend = st.tuples(st.just("spend"), st.decimals("0.1", "120", places=1))
again = st.tuples(st.just("again"), st.integers(0, 50))  # a duplicate delivery
replay = st.tuples(st.just("replay"), st.integers(0, 50))  # the same event, a new delivery
steps = st.lists(st.one_of(buy, refund, spend, again, replay), min_size=1, max_size=25)


@dataclass
class Rules:
    """The money rules, restated: what the balance and debt must be."""

    balance: Decimal = Decimal(0)
    debt: Decimal = Decimal(0)
    granted: dict[str, Decimal] = field(default_factory=dict)
    taken_back: dict[str, Decimal] = field(default_factory=dict)
    spent: Decimal = Decimal(0)

    def grant(self, session_id: str, credits: Decimal) -> None:
        if session_id in self.granted:
            return
        self.granted[session_id] = credits
        paid = min(self.debt, credits)
        self.debt -= paid
        self.balance += credits - paid

    def refund(self, session_id: str, refunded_cents: int, cents: int) -> bool:
        """False when the purchase is not recorded yet (the event waits and is retried)."""
        if session_id not in self.granted:
            return False
        share = (self.granted[session_id] * Decimal(refunded_cents) / Decimal(cents)).quantize(
            QUANTUM, rounding=ROUND_HALF_UP
        )
        more = share - self.taken_back.get(session_id, Decimal(0))
        if more > 0:
            taken = min(more, self.balance)
            self.balance -= taken
            self.debt += more - taken
            self.taken_back[session_id] = share
        return True

    def spend(self, amount: Decimal) -> bool:
        if amount > self.balance:
            return False
        self.balance -= amount
        self.spent += amount
        return True


@pytest.fixture
def table(database_url):
    return table_for(database_url)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=steps)
def test_any_sequence_of_money_events_keeps_the_balance_exact_and_never_negative(
    sessions, table, steps
):
    account_id = next(_accounts)
    with transaction(sessions) as s:
        ensure_account(s, account_id, now=NOW, welcome_credits=Decimal(0))
    seed(sessions)
    rules = Rules()
    bought: dict[int, tuple[str, dict]] = {}  # session number -> (pack, checkout object)
    delivered: list[tuple[EventContext, object]] = []  # each event, and what the rules do

    def apply(event: EventContext, rule) -> None:
        delivered.append((event, rule))
        waits = not rule()
        try:
            deliver(sessions, table, event)
        except RetryLater:
            assert waits, f"{event.event_type} waited, the rules say it applies"
        else:
            assert not waits, f"{event.event_type} applied, the rules say it must wait"

    for step in steps:
        kind = step[0]
        if kind == "buy":
            _, number, pack, event_type = step
            pack, obj = bought.setdefault(
                number,
                (
                    pack,
                    checkout_session(account_id, pack=pack, session_id=f"cs_{account_id}_{number}"),
                ),
            )
            event = stripe_event(event_type, obj)
            apply(event, lambda o=obj, p=pack: rules.grant(o["id"], PACK_CREDITS[p]) or True)
        elif kind == "refund":
            _, number, percent = step
            pack, obj = bought.get(number, (PACKS[0], checkout_session(
                account_id, pack=PACKS[0], session_id=f"cs_{account_id}_{number}")))  # fmt: skip
            cents = PACK_CENTS[pack]
            refunded = cents * percent // 100
            event = stripe_event("charge.refunded", charge(obj["payment_intent"], cents, refunded))
            apply(event, lambda o=obj, r=refunded, c=cents: rules.refund(o["id"], r, c))
        elif kind == "spend":
            amount = step[1]
            allowed = rules.spend(amount)
            with transaction(sessions) as s:
                try:
                    ledger.spend(s, account_id, amount, key=f"spend:{account_id}:{len(delivered)}",
                                 reason="job", now=NOW)  # fmt: skip
                    assert allowed, f"spent {amount} the rules refuse"
                except InsufficientCredits:
                    assert not allowed, f"refused {amount} the rules allow"
            delivered.append((stripe_event("spend", {}), lambda: True))
        elif delivered:
            earlier, rule = delivered[step[1] % len(delivered)]
            if earlier.event_type == "spend":
                continue
            if kind == "replay":
                earlier = replace(
                    earlier, id=earlier.id + 10**8, delivery_id=earlier.delivery_id + "r"
                )
            apply(earlier, rule)

        with transaction(sessions) as s:
            balance, debt = balances.balance(s, account_id), balances.debt(s, account_id)
        assert balance >= 0
        assert (balance, debt) == (rules.balance, rules.debt), steps
        # Conservation: what came in, less what went out, is what is left (less what is owed).
        taken = sum(rules.taken_back.values(), Decimal(0))
        assert balance - debt == sum(rules.granted.values(), Decimal(0)) - taken - rules.spent
