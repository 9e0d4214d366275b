"""Account locks: a batch takes only the accounts no other transaction holds, and a lock
already held in a transaction is not asked for again."""

from __future__ import annotations

from contextlib import contextmanager
from decimal import Decimal
from unittest.mock import patch

import psycopg
import pytest
from sqlalchemy import event, select

from domain import account_locks, ledger_tables
from domain.account_opening import ensure_account
from outbox.db import make_engine, make_sessionmaker, transaction
from tests.domain.billing_support import NOW

D = Decimal


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
