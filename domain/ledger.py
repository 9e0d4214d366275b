"""The rules that write the credit ledger (domain/ledger_tables.py): credit, spend, take
back, adjust, each entry once per idempotency key.

The balance never goes below zero. Debt: a refund may take back more than the account still
has. It then takes what is available, and the rest is recorded as debt on the same entry
(`debt_change` > 0); later credits pay the debt first (`debt_change` < 0 on their entry)
and only the remainder reaches the balance.

Spends and refunds only ever take from `available` (domain/balances.py): the balance minus
the open holds (domain/holds.py).

Every write first locks the account's row (domain/account_locks.py), then checks the key,
then the balance: two concurrent spends of one account run one after the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Table
from sqlalchemy.orm import Session

from domain.account_locks import lock_account, lock_accounts
from domain.accounts import UnknownAccount
from domain.balances import applied_keys, available, availables, debts, entry_for_key
from domain.credits import InvalidAmount, format_credits, parse_credits, positive_credits
from domain.ledger_tables import ZERO, CreditEntry
from outbox.session import insert_all


class KeyReused(Exception):
    """An idempotency key already applied to different content (another account or amount)."""


class InsufficientCredits(Exception):
    """The account's available credits are short of what was asked."""

    def __init__(self, account_id: int, wanted: Decimal, available: Decimal) -> None:
        super().__init__(f"account {account_id} has {available} credits available, {wanted} needed")
        self.account_id = account_id
        self.wanted = wanted
        self.available = available


_ledger: Table = CreditEntry.__table__  # type: ignore[assignment]


@dataclass(frozen=True)
class Entry:
    """A ledger entry as `credit` and `credit_many` wrote it (not read back: it has no id)."""

    key: str
    account_id: int
    #: What reached the balance, and what paid debt (negative), as on CreditEntry.
    amount: Decimal
    debt_change: Decimal
    reason: str
    event_id: int | None
    job_id: int | None
    created_at: datetime


@dataclass(frozen=True)
class NewCredit:
    """Credits to add to an account, once per key (see `credit_many`)."""

    account_id: int
    amount: Decimal
    key: str
    reason: str
    event_id: int | None = None
    job_id: int | None = None


def credit(
    session: Session,
    account_id: int,
    amount: Decimal | int | str,
    *,
    key: str,
    reason: str,
    now: datetime,
    event_id: int | None = None,
    job_id: int | None = None,
) -> CreditEntry | None:
    """Add credits (debt is paid first); None when `key` was already applied.

    The entry's `amount` is what reached the balance, its `debt_change` what paid debt.
    """
    one = NewCredit(account_id, positive_credits(amount), key, reason, event_id, job_id)
    [entry] = _credit_entries(session, [one], now)
    if entry is None:
        return None
    return append_entry(
        session, account_id, entry.amount, entry.debt_change, key=key, reason=reason, now=now,
        event_id=event_id, job_id=job_id,
    )  # fmt: skip


def credit_many(
    session: Session, credits: Sequence[NewCredit], *, now: datetime
) -> list[Entry | None]:
    """`credit` for many entries at once: a few statements whatever their number.

    The entries are written with one statement (outbox/session.py's `insert_all`) and are
    not read back: those returned have no id.
    """
    entries = _credit_entries(session, credits, now)
    _write_entries(session, entries)
    return entries


def _write_entries(session: Session, entries: Sequence[Entry | None]) -> None:
    """Insert the entries written now (None: a key applied before), in their order."""
    insert_all(session, _ledger, [vars(entry) for entry in entries if entry is not None])


def _credit_entries(
    session: Session, credits: Sequence[NewCredit], now: datetime
) -> list[Entry | None]:
    """The entries that credit these amounts, not yet written.

    Locks every account first (UnknownAccount if one is missing), then skips the keys
    already applied (None in their place), then pays each account's debt first, in the
    order given.
    """
    amounts = [positive_credits(item.amount) for item in credits]
    if not credits:
        return []
    accounts, applied = _lock_and_read_keys(session, credits)
    owed = debts(session, accounts)
    entries: list[Entry | None] = []
    for item, amount in zip(credits, amounts, strict=True):
        if item.key in applied:
            entries.append(None)
            continue
        applied.add(item.key)
        paid = min(owed.get(item.account_id, ZERO), amount)
        owed[item.account_id] = owed.get(item.account_id, ZERO) - paid
        entry = Entry(
            item.key, item.account_id, amount - paid, -paid, item.reason, item.event_id,
            item.job_id, now,
        )  # fmt: skip
        entries.append(entry)
    return entries


def spend(
    session: Session,
    account_id: int,
    amount: Decimal | int | str,
    *,
    key: str,
    reason: str,
    now: datetime,
    event_id: int | None = None,
    job_id: int | None = None,
) -> CreditEntry | None:
    """Take credits; InsufficientCredits if `available` is short; None when `key` was applied."""
    amount = positive_credits(amount)
    lock_account(session, account_id)
    if entry_for_key(session, key) is not None:
        return None
    require_available(session, account_id, amount)
    return append_entry(
        session, account_id, -amount, ZERO, key=key, reason=reason, now=now,
        event_id=event_id, job_id=job_id,
    )  # fmt: skip


def take_back(
    session: Session,
    account_id: int,
    amount: Decimal,
    *,
    key: str,
    reason: str,
    now: datetime,
    event_id: int | None = None,
) -> CreditEntry | None:
    """Take back credits granted earlier (a refund): what is available, the rest as debt.

    Never refuses and never goes below zero; None when `key` was already applied.
    """
    one = NewTakeBack(account_id, positive_credits(amount), key, reason, event_id)
    [entry] = _take_back_entries(session, [one], now)
    if entry is None:
        return None
    return append_entry(
        session, account_id, entry.amount, entry.debt_change, key=key, reason=reason, now=now,
        event_id=event_id,
    )  # fmt: skip


@dataclass(frozen=True)
class NewTakeBack:
    """Credits to take back from an account, once per key (see `take_back_many`)."""

    account_id: int
    amount: Decimal
    key: str
    reason: str
    event_id: int | None = None


def take_back_many(
    session: Session, items: Sequence[NewTakeBack], *, now: datetime
) -> list[Entry | None]:
    """`take_back` for many at once, in the order given: a few statements whatever their
    number (the accounts locked, the keys and what each account has available read, the
    entries written in one, not read back). None in place of a key already applied."""
    entries = _take_back_entries(session, items, now)
    _write_entries(session, entries)
    return entries


def _take_back_entries(
    session: Session, items: Sequence[NewTakeBack], now: datetime
) -> list[Entry | None]:
    """The entries that take back these amounts, in the order given, not yet written."""
    amounts = [positive_credits(item.amount) for item in items]
    if not items:
        return []
    accounts, applied = _lock_and_read_keys(session, items)
    left = availables(session, accounts)
    entries: list[Entry | None] = []
    for item, amount in zip(items, amounts, strict=True):
        if item.key in applied:
            entries.append(None)
            continue
        applied.add(item.key)
        taken = _taken(amount, left[item.account_id])
        left[item.account_id] -= taken
        entry = Entry(
            item.key, item.account_id, -taken, amount - taken, item.reason, item.event_id,
            None, now,
        )  # fmt: skip
        entries.append(entry)
    return entries


def _lock_and_read_keys(
    session: Session, items: Sequence[NewCredit | NewTakeBack]
) -> tuple[set[int], set[str]]:
    """Lock the entries' accounts (UnknownAccount if one is missing); the accounts, and
    those of the entries' keys already applied."""
    accounts = lock_accounts(session, (item.account_id for item in items))
    for item in items:
        if item.account_id not in accounts:
            raise UnknownAccount(f"no account with id {item.account_id}")
    return accounts, applied_keys(session, (item.key for item in items))


def _taken(amount: Decimal, available: Decimal) -> Decimal:
    """What a take-back takes from the balance: what is available of it (the rest is debt)."""
    return max(ZERO, min(amount, available))


def adjust(
    session: Session,
    account_id: int,
    amount: Decimal | int | str,
    *,
    key: str,
    reason: str,
    now: datetime,
) -> CreditEntry | None:
    """An operator's correction, either sign: a positive one pays debt first, like any credit;
    a negative one is refused (InsufficientCredits) if it would leave less than zero available.

    The same adjustment again (same key, account and amount) is None, writing nothing; the
    key already used for another account or amount is KeyReused, naming its first use (the
    reason is free text and does not count).
    """
    amount = parse_credits(amount)
    if amount == 0:
        raise InvalidAmount("an adjustment of zero credits changes nothing")
    lock_account(session, account_id)
    first = entry_for_key(session, key)
    if first is not None:
        _require_same_adjustment(first, account_id, amount)
        return None
    if amount > 0:
        return credit(session, account_id, amount, key=key, reason=reason, now=now)
    return spend(session, account_id, -amount, key=key, reason=reason, now=now)


# --- steps ---------------------------------------------------------------------------


def _require_same_adjustment(first: CreditEntry, account_id: int, amount: Decimal) -> None:
    # A credit's entry keeps what reached the balance and what paid debt apart; together
    # they are the adjustment's amount. A negative adjustment's entry is the amount itself.
    first_amount = first.amount - first.debt_change
    if first.account_id == account_id and first_amount == amount:
        return
    raise KeyReused(
        f"key {first.key!r} was already used for account {first.account_id}, "
        f"{format_credits(first_amount)} credits (ledger entry {first.id}, "
        f"{first.created_at:%Y-%m-%d %H:%M:%S})"
    )


def require_available(session: Session, account_id: int, amount: Decimal) -> None:
    """InsufficientCredits unless the account may take `amount` now."""
    have = available(session, account_id)
    if have < amount:
        raise InsufficientCredits(account_id, amount, have)


def append_entry(
    session: Session,
    account_id: int,
    amount: Decimal,
    debt_change: Decimal,
    *,
    key: str,
    reason: str,
    now: datetime,
    event_id: int | None = None,
    job_id: int | None = None,
) -> CreditEntry:
    """Write one entry as given; the caller has locked the account and applied the rules."""
    row = CreditEntry(
        key=key,
        account_id=account_id,
        amount=amount,
        debt_change=debt_change,
        reason=reason,
        event_id=event_id,
        job_id=job_id,
        created_at=now,
    )
    session.add(row)
    session.flush()
    return row
