"""Opening an account gives its welcome grant once, however many transactions open it."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest

from domain import balances
from domain.account_opening import ensure_account
from domain.accounts import find_account
from outbox.db import make_engine, make_sessionmaker, transaction
from tests.domain.billing_support import NOW

D = Decimal


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
