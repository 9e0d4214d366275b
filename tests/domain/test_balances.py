"""An account's standing (balance, available, debt) follows from its entries and open holds."""

from __future__ import annotations

import itertools
from decimal import Decimal

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from domain import balances, holds, ledger
from outbox.db import transaction
from tests.domain.billing_support import NOW, new_account

D = Decimal

_amounts = st.integers(1, 60).map(D)
_ledger_steps = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["credit", "take_back", "spend", "hold"]), _amounts),
        st.tuples(st.sampled_from(["release", "capture"]), st.just(D(0))),  # the oldest open
    ),
    min_size=1,
    max_size=20,
)
_ids = itertools.count(1_000)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=_ledger_steps)
@example(steps=[("credit", D(85)), ("hold", D(85)), ("take_back", D(85)), ("release", D(0))])
def test_available_and_debt_follow_from_what_came_in_went_out_and_is_held(sessions, steps):
    """net = credited - taken back - spent; then available = max(0, net - held), debt =
    max(0, held - net), balance = available + held, after every step (released holds pay
    debt first)."""
    account = next(_ids)
    new_account(sessions, account, login=f"p{account}")
    net, reserved = D(0), []  # reserved: [key, amount, open]
    for n, (kind, value) in enumerate(steps):
        key = f"p:{account}:{n}"
        with transaction(sessions) as s:
            if kind == "credit":
                ledger.credit(s, account, value, key=key, reason="in", now=NOW)
                net += value
            elif kind == "take_back":
                ledger.take_back(s, account, value, key=key, reason="back", now=NOW)
                net -= value
            elif kind == "spend" and balances.available(s, account) >= value:
                ledger.spend(s, account, value, key=key, reason="out", now=NOW)
                net -= value
            elif kind == "hold" and balances.available(s, account) >= value:
                holds.hold(s, account, value, key=key, now=NOW)
                reserved.append([key, value, True])
            elif kind in ("release", "capture") and any(is_open for *_, is_open in reserved):
                oldest = next(h for h in reserved if h[2])
                hold_key, amount, _ = oldest
                oldest[2] = False
                if kind == "release":
                    assert holds.release_hold(s, hold_key, now=NOW)
                else:
                    holds.capture_hold(s, hold_key, ledger_key=f"c:{hold_key}", reason="job",
                                        now=NOW)  # fmt: skip
                    net -= amount
        held = sum((amount for _, amount, is_open in reserved if is_open), D(0))
        with transaction(sessions) as s:
            now = balances.standing(s, account)
        assert (now.available, now.debt, now.balance) == (
            max(D(0), net - held), max(D(0), held - net), max(D(0), net - held) + held,
        ), (kind, value)  # fmt: skip
