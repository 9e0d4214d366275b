"""Account locks: the row lock a writer of an account's credits takes first, and the record
of which accounts the session's transaction already holds.

Every write to the credit ledger (domain/ledger.py, domain/holds.py) and every batch of
events that touches accounts locks the account rows first, in ascending id order: two
writers of one account run one after the other, and two transactions that lock
overlapping sets wait for each other instead of deadlocking. Postgres takes
`SELECT … FOR UPDATE`; SQLite has no row locks, but a transaction there already holds the
database's write lock (BEGIN IMMEDIATE, see outbox/db.py).

The session remembers the locks its transaction and each open savepoint took, so a second
request for an account already held asks the database nothing; and the Stripe customer
each account had when it was locked (`held_customers`): while the lock is held no other
transaction can change it, so a batch need not ask to link a customer to an account that
has one already.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Select, Table, select
from sqlalchemy.orm import Session

from domain.accounts import Account, UnknownAccount
from outbox.session import OneOf, Query


def lock_account(session: Session, account_id: int) -> None:
    """Lock the account's row until the transaction ends (UnknownAccount if there is none).

    On Postgres this is `SELECT … FOR UPDATE`: every writer of one account's credits waits
    here for the previous one to commit, then reads the balance that one left. SQLite
    has no row locks, but a transaction there already holds the database's write lock.
    A second call in the same transaction (a grant that then credits) asks nothing again:
    the lock is already held until that transaction ends.
    """
    if account_id not in lock_accounts(session, [account_id]):
        raise UnknownAccount(f"no account with id {account_id}")


def lock_accounts(session: Session, account_ids: Iterable[int]) -> set[int]:
    """Lock the rows of these accounts until the transaction ends; the ids that exist.

    One statement, locking in ascending id order: two transactions that lock overlapping
    sets of accounts this way wait for each other instead of deadlocking.
    """
    held, own = _held_locks(session)
    wanted = set(account_ids)
    missing = sorted(wanted - held)
    if missing:
        fresh = _locked(session, _LOCK_ACCOUNTS.rows(session, ids=missing))
        own.update(fresh)
        held |= fresh
    return wanted & held


def try_lock_accounts(session: Session, account_ids: Iterable[int]) -> set[int]:
    """Lock the rows of these accounts that no other transaction holds now, in ascending
    id order, without waiting; the ids another transaction holds (busy: their writes wait
    for another batch). An id with no account is not busy: its writer finds it missing.

    A batch of events takes its accounts this way (processors/apply.py): it never waits
    for another batch's accounts, so two batches never deadlock, and the rows whose
    accounts are busy are handed to a later batch instead of keeping this one waiting.
    SQLite has no row locks (a transaction holds the database's write lock): never busy.
    """
    held, own = _held_locks(session)
    wanted = set(account_ids)
    missing = sorted(wanted - held)
    if not missing:
        return set()
    fresh = _locked(session, _TRY_LOCK_ACCOUNTS.rows(session, ids=missing))
    own.update(fresh)
    if len(fresh) == len(missing):
        return set()
    unlocked = [account_id for account_id in missing if account_id not in fresh]
    return {id_ for (id_,) in _EXISTING_ACCOUNTS.rows(session, ids=unlocked)}


def held_customers(session: Session, account_ids: Iterable[int]) -> dict[int, str | None]:
    """The Stripe customer (None: none) of each of these accounts that the session's
    transaction holds locked, as it was when locked: no other transaction can have changed
    it since. An account not held, or locked without its customer read, is left out."""
    held, _ = _held_locks(session)
    customers: dict[int, str | None] = session.info.get(_CUSTOMERS, {})
    return {a: customers[a] for a in account_ids if a in held and a in customers}


def _locked(session: Session, locked: list[tuple[Any, ...]]) -> set[int]:
    """The ids of rows `(id, stripe_customer_id)` just locked; their customers remembered."""
    customers: dict[int, str | None] = session.info.setdefault(_CUSTOMERS, {})
    for account_id, customer in locked:
        customers[account_id] = customer
    return {account_id for account_id, _ in locked}


def holds_all(session: Session, account_ids: Iterable[int]) -> bool:
    """Whether the session's transaction holds the locks of all these accounts already."""
    held, _ = _held_locks(session)
    return set(account_ids) <= held


_LOCKS = "ledger_account_locks"  #: the key of the lock record in `session.info`
_CUSTOMERS = "account_lock_customers"  #: account id -> its customer when locked, in `session.info`
#: Core statements on the table (not the mapped class): plain ids, without the Python of
#: an ORM select, for statements every batch of events runs.
_accounts: Table = Account.__table__  # type: ignore[assignment]


def _existing(one_of: OneOf) -> Select[Any]:
    return select(_accounts.c.id).where(one_of(_accounts.c.id, "ids"))


def _locking(one_of: OneOf) -> Select[Any]:
    return (
        select(_accounts.c.id, _accounts.c.stripe_customer_id)
        .where(one_of(_accounts.c.id, "ids"))
        .order_by(_accounts.c.id)
    )


#: Those of the accounts `ids` that exist.
_EXISTING_ACCOUNTS = Query(_existing)
#: Lock those of the accounts `ids` that exist, in id order, reading each one's customer.
_LOCK_ACCOUNTS = Query(lambda one_of: _locking(one_of).with_for_update())
#: The same for those no other transaction holds.
_TRY_LOCK_ACCOUNTS = Query(lambda one_of: _locking(one_of).with_for_update(skip_locked=True))


def _held_locks(session: Session) -> tuple[set[int], set[int]]:
    """The accounts locked by the session's current transaction or a savepoint still open in
    it, and the record that locks taken now go to (the innermost savepoint's).

    A lock taken inside a savepoint is released if that savepoint rolls back, so each
    savepoint keeps its own record, forgotten once it has ended.
    """
    innermost = session.get_nested_transaction() or session.get_transaction()
    if innermost is None:
        return set(), set()
    open_ones: list[Any] = []
    step: Any = innermost
    while step is not None:
        open_ones.append(step)
        step = step.parent
    records: dict[int, tuple[Any, set[int]]] = session.info.setdefault(_LOCKS, {})
    for key in [k for k, (t, _) in records.items() if not any(t is o for o in open_ones)]:
        del records[key]
    held: set[int] = set()
    for transaction in open_ones:
        record = records.get(id(transaction))
        if record is not None and record[0] is transaction:
            held |= record[1]
    if records.get(id(innermost), (None,))[0] is not innermost:
        records[id(innermost)] = (innermost, set())
    return held, records[id(innermost)][1]
