"""Credit holds reserve what is available until released, or captured once."""

from __future__ import annotations

from decimal import Decimal

import pytest

from domain import balances, holds, ledger
from domain.ledger import InsufficientCredits
from outbox.db import transaction
from tests.domain.billing_support import NOW, new_account

D = Decimal


def test_holds_reserve_credits_until_released_or_captured_once(sessions):
    new_account(sessions, welcome="10")
    with transaction(sessions) as s:
        first = holds.hold(s, 1, 6, key="hold:job:1", now=NOW, job_id=1)
        assert holds.hold(s, 1, 6, key="hold:job:1", now=NOW).id == first.id
        assert balances.available(s, 1) == D(4)
        with pytest.raises(InsufficientCredits):
            holds.hold(s, 1, 5, key="hold:job:2", now=NOW)
        with pytest.raises(InsufficientCredits):
            ledger.spend(s, 1, 5, key="spend", reason="x", now=NOW)
        holds.hold(s, 1, 4, key="hold:job:2", now=NOW, job_id=2)
    with transaction(sessions) as s:
        assert holds.release_hold(s, "hold:job:2", now=NOW)
        assert not holds.release_hold(s, "hold:job:2", now=NOW)
        assert not holds.release_hold(s, "hold:none", now=NOW)
        entry = holds.capture_hold(s, "hold:job:1", ledger_key="job:1", reason="job", now=NOW)
        assert entry is not None and entry.amount == D(-6) and entry.job_id == 1
        again = holds.capture_hold(s, "hold:job:1", ledger_key="job:1", reason="job", now=NOW)
        assert again is None
        assert not holds.release_hold(s, "hold:job:1", now=NOW)
    with transaction(sessions) as s:
        assert balances.balance(s, 1) == D(4)
        assert balances.available(s, 1) == D(4)
        with pytest.raises(LookupError):
            holds.capture_hold(s, "hold:none", ledger_key="job:9", reason="job", now=NOW)


def test_capturing_a_released_hold_charges_it_only_if_the_credits_are_still_there(sessions):
    new_account(sessions, welcome="10")
    with transaction(sessions) as s:
        holds.hold(s, 1, 6, key="h1", now=NOW)
        holds.release_hold(s, "h1", now=NOW)
        ledger.spend(s, 1, 5, key="other", reason="x", now=NOW)
    with transaction(sessions) as s, pytest.raises(InsufficientCredits):
        holds.capture_hold(s, "h1", ledger_key="job:1", reason="job", now=NOW)
    with transaction(sessions) as s:
        ledger.credit(s, 1, 1, key="topup", reason="x", now=NOW)
        assert holds.capture_hold(s, "h1", ledger_key="job:1", reason="job", now=NOW)
        assert balances.balance(s, 1) == D(0)
