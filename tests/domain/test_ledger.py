"""The credit ledger: exact amounts, once per key, never below zero, holds, debt."""

from __future__ import annotations

import itertools
import threading
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from unittest.mock import patch

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import Float, Numeric, event, select

from domain import account_locks, balances, holds, ledger, ledger_tables
from domain.account_opening import ensure_account
from domain.accounts import (
    CustomerAlreadyLinked,
    UnknownAccount,
    account_for_customer,
    find_account,
    link_customer,
)
from domain.credits import InvalidAmount, format_credits, parse_credits
from domain.jobs import PrJob
from domain.ledger import InsufficientCredits
from domain.usage import UsageRecord, record_usage
from outbox.db import Base, make_engine, make_sessionmaker, transaction

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
D = Decimal


def new_account(sessions, account_id=1, *, welcome="0", login="octocat"):
    with transaction(sessions) as s:
        account, _ = ensure_account(
            s, account_id, login=login, kind="User", now=NOW, welcome_credits=D(welcome)
        )
    return account


@pytest.mark.parametrize(
    ("text", "expected"),
    [("12", "12"), ("0.2", "0.2"), ("-3.75", "-3.75"), ("0.0001", "0.0001"), ("1.50000", "1.5"),
     (" 7 ", "7"), (".5", "0.5")],
)  # fmt: skip
def test_parse_credits_is_exact_to_a_ten_thousandth(text, expected):
    assert parse_credits(text) == D(expected)
    assert format_credits(parse_credits(text)) == expected


@pytest.mark.parametrize(
    "bad", ["1e3", "0.00001", "abc", "nan", "NaN", "inf", "", "1,5", "--1", "1_000",
            "100000000000000", 0.1, True, None, D("NaN"), D("1E-7")],
)  # fmt: skip
def test_parse_credits_refuses_floats_exponents_and_too_many_decimals(bad):
    with pytest.raises(InvalidAmount):
        parse_credits(bad)


def test_amounts_survive_the_database_exactly(sessions):
    new_account(sessions)
    with transaction(sessions) as s:
        for i in range(10):
            ledger.credit(s, 1, "0.1", key=f"tenth:{i}", reason="test", now=NOW)
        ledger.credit(s, 1, "12345678901.2345", key="big", reason="test", now=NOW)
    with transaction(sessions) as s:
        assert balances.balance(s, 1) == D("12345678902.2345")
        amounts = [e.amount for e in balances.history(s, 1)]
    assert amounts[:10] == [D("0.1")] * 10
    assert all(isinstance(a, Decimal) for a in amounts)


def test_welcome_grant_is_given_once_when_the_account_is_created(sessions):
    with transaction(sessions) as s:
        _, created = ensure_account(s, 7, login="acme", now=NOW, welcome_credits=D(50))
        assert created
    with transaction(sessions) as s:
        _, created = ensure_account(s, 7, login="acme-renamed", now=NOW, welcome_credits=D(50))
        assert not created
    with transaction(sessions) as s:
        assert balances.balance(s, 7) == D(50)
        assert [e.key for e in balances.history(s, 7)] == ["welcome:7"]
        assert find_account(s, "ACME-renamed").id == 7
        assert find_account(s, "7").login == "acme-renamed"
        assert find_account(s, "acme") is None


def test_accounts_link_one_stripe_customer_each(sessions):
    new_account(sessions, 1)
    new_account(sessions, 2, login="other")
    with transaction(sessions) as s:
        assert link_customer(s, 1, "cus_A", now=NOW)
        assert not link_customer(s, 1, "cus_A", now=NOW)
    with transaction(sessions) as s:
        assert account_for_customer(s, "cus_A").id == 1
        with pytest.raises(CustomerAlreadyLinked):
            link_customer(s, 2, "cus_A", now=NOW)
        with pytest.raises(CustomerAlreadyLinked):
            link_customer(s, 1, "cus_B", now=NOW)
        assert link_customer(s, 1, "cus_B", now=NOW, replace=True)
        with pytest.raises(UnknownAccount):
            link_customer(s, 99, "cus_C", now=NOW)


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


def test_every_credit_column_has_the_exact_credits_type():
    plain = [
        f"{table.name}.{column.name}"
        for table in Base.metadata.sorted_tables
        for column in table.columns
        if isinstance(column.type, Numeric | Float)
    ]
    assert plain == []


def test_job_credits_and_usage_quantities_are_stored_exactly(sessions):
    huge = D("12345678901234.5678")  # 18 digits: more than a binary float keeps
    with transaction(sessions) as s:
        job = PrJob(
            origin="submitted", account_id=1, installation_id=1, repository="o/r",
            base_branch="main", head_branch="h", title="t", body="b", files=[],
            required_credits=huge, status="failed", created_at=NOW,
        )  # fmt: skip
        s.add(job)
        record_usage(
            s, key="k", account_id=1, job_id=None, quantity=huge, meter_event_name="m", now=NOW
        )
    with transaction(sessions) as s:
        assert s.scalar(select(PrJob.required_credits)) == huge
        assert s.scalar(select(UsageRecord.quantity)) == huge


def test_the_migrated_schema_matches_the_models(engine):
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


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


@pytest.mark.postgres
def test_a_batch_takes_the_accounts_no_other_transaction_holds_and_names_the_busy_ones(
    postgres_url,
):
    """try_lock_accounts never waits: an account another transaction holds is named busy,
    the others are locked; an id with no account is not busy."""
    engine = make_engine(postgres_url, pool_size=2)
    sessions = make_sessionmaker(engine)
    try:
        with transaction(sessions) as s:
            for account_id in (1, 2):
                ensure_account(s, account_id, login=f"a{account_id}", now=NOW, welcome_credits=D(0))
        with sessions() as holder, holder.begin(), sessions() as batch, batch.begin():
            account_locks.lock_account(holder, 1)
            assert account_locks.try_lock_accounts(batch, [1, 2, 3]) == {1}
            assert account_locks.try_lock_accounts(batch, [2]) == set()  # already this batch's
            batch.execute(select(ledger_tables.CreditEntry.id).limit(1))  # still usable: no wait
    finally:
        engine.dispose()
        from tests.conftest import _empty_postgres

        _empty_postgres(postgres_url)


@pytest.mark.postgres
def test_an_account_created_by_ten_transactions_at_once_gets_one_welcome_grant(postgres_url):
    engine = make_engine(postgres_url, pool_size=10)
    sessions = make_sessionmaker(engine)
    start = threading.Barrier(10)
    created: list[bool] = []
    try:

        def create() -> None:
            with sessions() as s, s.begin():
                s.connection()
                start.wait()
                _, new = ensure_account(s, 77, login="twins", now=NOW, welcome_credits=D(50))
            created.append(new)

        threads = [threading.Thread(target=create) for _ in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert sorted(created) == [False] * 9 + [True]
        with transaction(sessions) as s:
            assert balances.balance(s, 77) == D(50)
    finally:
        engine.dispose()
        from tests.conftest import _empty_postgres

        _empty_postgres(postgres_url)


@contextmanager
def recorded_statements(engine):  # type: ignore[no-untyped-def]
    """The SQL sent through `engine` while the block runs, and straight on psycopg
    connections (the statements outbox/driver/prepared.py sends)."""
    statements: list[str] = []

    def remember(_conn, _cursor, statement, *_args):  # type: ignore[no-untyped-def]
        statements.append(statement)

    driver_execute = psycopg.Connection.execute

    def execute(self, query, *args, **kwargs):  # type: ignore[no-untyped-def]
        statements.append(str(query))
        return driver_execute(self, query, *args, **kwargs)

    event.listen(engine, "before_cursor_execute", remember)
    try:
        with patch.object(psycopg.Connection, "execute", execute):
            yield statements
    finally:
        event.remove(engine, "before_cursor_execute", remember)


def test_a_second_lock_in_one_transaction_asks_nothing_and_a_new_transaction_locks_again(
    sessions, engine
):
    with transaction(sessions) as session:
        ensure_account(session, 4242, login="locker", now=NOW, welcome_credits=D(0))
    with recorded_statements(engine) as statements, sessions() as session:
        with session.begin():
            account_locks.lock_account(session, 4242)
            account_locks.lock_account(session, 4242)
        in_first = len([s for s in statements if "accounts" in s])
        with session.begin():
            account_locks.lock_account(session, 4242)
        in_both = len([s for s in statements if "accounts" in s])
    assert in_first == 1
    assert in_both == 2


def test_a_lock_taken_in_a_savepoint_that_rolled_back_is_taken_again(sessions, engine):
    with transaction(sessions) as session:
        ensure_account(session, 4343, login="saver", now=NOW, welcome_credits=D(0))
    with recorded_statements(engine) as statements, sessions() as session, session.begin():
        savepoint = session.begin_nested()
        assert account_locks.lock_accounts(session, [4343, 404]) == {4343}  # 404: no such account
        savepoint.rollback()  # the row lock went with the savepoint
        account_locks.lock_account(session, 4343)
        with session.begin_nested():
            account_locks.lock_account(session, 4343)  # held by the transaction around it
    assert len([s for s in statements if "FROM accounts" in s]) == 2


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
