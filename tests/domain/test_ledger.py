"""The credit ledger's rules: each entry once per key, never below zero, and debt that later
credits pay first."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest

from domain import balances, holds, ledger
from domain.account_opening import ensure_account
from domain.accounts import UnknownAccount
from domain.credits import InvalidAmount
from domain.ledger import InsufficientCredits
from outbox.db import make_engine, make_sessionmaker, transaction
from tests.domain.billing_support import NOW, new_account

D = Decimal


def test_an_entry_is_applied_once_per_key(sessions):
    new_account(sessions)
    with transaction(sessions) as s:
        assert ledger.credit(s, 1, 10, key="pack:cs_1", reason="pack", now=NOW) is not None
        assert ledger.credit(s, 1, 10, key="pack:cs_1", reason="pack", now=NOW) is None
        assert ledger.spend(s, 1, "2.5", key="job:1", reason="job", now=NOW, job_id=1)
        assert ledger.spend(s, 1, "2.5", key="job:1", reason="job", now=NOW, job_id=1) is None
    with transaction(sessions) as s:
        assert balances.balance(s, 1) == D("7.5")


def test_spending_more_than_the_balance_is_refused_and_writes_nothing(sessions):
    new_account(sessions, welcome="1")
    with transaction(sessions) as s, pytest.raises(InsufficientCredits) as err:
        ledger.spend(s, 1, "1.0001", key="job:1", reason="job", now=NOW)
    assert err.value.available == D(1)
    with transaction(sessions) as s:
        assert balances.balance(s, 1) == D(1)
        assert len(balances.history(s, 1)) == 1


@pytest.mark.parametrize("amount", ["0", "-1", 0, "abc"])
def test_spends_and_credits_must_be_positive(sessions, amount):
    new_account(sessions, welcome="5")
    with transaction(sessions) as s:
        with pytest.raises(InvalidAmount):
            ledger.spend(s, 1, amount, key="x", reason="x", now=NOW)
        with pytest.raises(InvalidAmount):
            ledger.credit(s, 1, amount, key="y", reason="y", now=NOW)


def test_writing_to_an_unknown_account_is_an_error(sessions):
    with transaction(sessions) as s, pytest.raises(UnknownAccount):
        ledger.credit(s, 404, 1, key="k", reason="r", now=NOW)


def test_a_refund_beyond_the_balance_leaves_a_debt_that_later_credits_pay_first(sessions):
    new_account(sessions, welcome="10")
    with transaction(sessions) as s:
        holds.hold(s, 1, 3, key="h", now=NOW)
        entry = ledger.take_back(s, 1, D(25), key="refund:1", reason="refund", now=NOW)
        assert (entry.amount, entry.debt_change) == (D(-7), D(18))
        assert ledger.take_back(s, 1, D(25), key="refund:1", reason="refund", now=NOW) is None
        assert (balances.balance(s, 1), balances.available(s, 1), balances.debt(s, 1)) == (3, 0, 18)
    with transaction(sessions) as s:
        paid = ledger.credit(s, 1, 10, key="pack:a", reason="pack", now=NOW)
        assert (paid.amount, paid.debt_change) == (D(0), D(-10))
        paid = ledger.credit(s, 1, 25, key="pack:b", reason="pack", now=NOW)
        assert (paid.amount, paid.debt_change) == (D(17), D(-8))
        assert (balances.balance(s, 1), balances.debt(s, 1)) == (D(20), D(0))


def test_operator_adjustments_may_not_make_the_balance_negative(sessions):
    new_account(sessions, welcome="2")
    with transaction(sessions) as s:
        with pytest.raises(InsufficientCredits):
            ledger.adjust(s, 1, "-2.0001", key="op:1", reason="oops", now=NOW)
        with pytest.raises(InvalidAmount):
            ledger.adjust(s, 1, "0", key="op:1", reason="oops", now=NOW)
        ledger.adjust(s, 1, "-2", key="op:2", reason="fix", now=NOW)
        ledger.adjust(s, 1, "0.5", key="op:3", reason="gift", now=NOW)
        assert balances.balance(s, 1) == D("0.5")


@pytest.mark.postgres
def test_fifty_concurrent_spends_never_drive_the_balance_below_zero(postgres_url):
    """50 threads, each its own connection and transaction, spend 1 of 30 credits at once."""
    engine = make_engine(postgres_url, pool_size=25)
    sessions = make_sessionmaker(engine)
    try:
        with transaction(sessions) as s:
            ensure_account(s, 42, login="race", now=NOW, welcome_credits=D(30))
        start = threading.Barrier(50)
        outcomes: list[str] = []
        lock = threading.Lock()

        def spender(n: int) -> None:
            try:
                with sessions() as s, s.begin():
                    s.connection()  # its own connection and transaction, before the start
                    start.wait()
                    ledger.spend(s, 42, 1, key=f"race:{n}", reason="race", now=NOW)
                outcome = "spent"
            except InsufficientCredits:
                outcome = "refused"
            with lock:
                outcomes.append(outcome)

        threads = [threading.Thread(target=spender, args=(n,)) for n in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert sorted(outcomes).count("spent") == 30
        assert outcomes.count("refused") == 20
        with transaction(sessions) as s:
            assert balances.balance(s, 42) == D(0)
            assert len(balances.history(s, 42)) == 31
    finally:
        engine.dispose()
        from tests.conftest import _empty_postgres

        _empty_postgres(postgres_url)


def _entries(session, account_id):
    return [
        (e.key.replace(str(account_id), "#"), e.amount, e.debt_change, e.reason, e.event_id,
         e.job_id, e.created_at)
        for e in balances.history(session, account_id)
    ]  # fmt: skip


def test_credit_many_writes_exactly_the_entries_credit_writes_one_by_one(sessions):
    """The batch write (one statement on Postgres) against `credit` in turn, from the same
    debt, with a repeated key and exact ten-thousandths."""
    for account_id in (1, 2):
        new_account(sessions, account_id, login=f"user{account_id}", welcome="2")
        with transaction(sessions) as s:
            ledger.take_back(s, account_id, D(5), key=f"refund:{account_id}", reason="r", now=NOW)
    amounts = [D("1.2345"), D("10"), D("0.0001"), D("7.5")]
    keys = ["a", "b", "a", "c"]
    with transaction(sessions) as s:
        for key, amount in zip(keys, amounts, strict=True):
            ledger.credit(s, 1, amount, key=f"1:{key}", reason=f"why {key}", now=NOW, event_id=9)
    with transaction(sessions) as s:
        written = ledger.credit_many(
            s,
            [ledger.NewCredit(2, amount, f"2:{key}", f"why {key}", event_id=9)
             for key, amount in zip(keys, amounts, strict=True)],
            now=NOW,
        )  # fmt: skip
        assert [w is None for w in written] == [False, False, True, False]
    with transaction(sessions) as s:
        one_by_one, together = _entries(s, 1), _entries(s, 2)
        assert together == one_by_one
        assert [e[0] for e in together] == ["welcome:#", "refund:#", "#:a", "#:b", "#:c"]
        assert (balances.balance(s, 2), balances.debt(s, 2)) == (balances.balance(s, 1), D(0))
