"""The credit ledger: every change of an account's credits, append-only, each entry once.

An entry's `amount` is what it did to the balance (signed); the balance is the sum of an
account's amounts, and never goes below zero. Each entry has a unique idempotency `key`
(`pack:<checkout session>`, `welcome:<account>`, `job:<id>`), so applying the same thing
twice writes nothing the second time.

Debt: a refund may take back more than the account still has. It then takes what is
available, and the rest is recorded as debt on the same entry (`debt_change` > 0); later
credits pay the debt first (`debt_change` < 0 on their entry) and only the remainder reaches
the balance. The debt, too, is a sum over the ledger.

`available` is the balance minus the open holds (credits reserved for work in progress,
domain/holds.py); spends and refunds only ever take from `available`.

Every write first locks the account's row (domain/account_locks.py), then checks the key,
then the balance: two concurrent spends of one account run one after the other.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    String,
    Table,
    UniqueConstraint,
    bindparam,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from domain.account_locks import lock_account, lock_accounts
from domain.accounts import UnknownAccount
from domain.credits import (
    Credits,
    InvalidAmount,
    format_credits,
    parse_credits,
    positive_credits,
)
from outbox.db import Base, UTCDateTime
from outbox.models import BigId

ZERO = Decimal("0.0000")


class KeyReused(Exception):
    """An idempotency key already applied to different content (another account or amount)."""


class InsufficientCredits(Exception):
    """The account's available credits are short of what was asked."""

    def __init__(self, account_id: int, wanted: Decimal, available: Decimal) -> None:
        super().__init__(f"account {account_id} has {available} credits available, {wanted} needed")
        self.account_id = account_id
        self.wanted = wanted
        self.available = available


#: Entries that changed a debt, written out (not a bound parameter) so that the planner
#: matches it with the partial index.
_HAS_DEBT_CHANGE = "debt_change <> 0"


class CreditEntry(Base):
    __tablename__ = "credit_ledger"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    #: Idempotency key: what this entry is the effect of ("pack:cs_…", "job:42").
    key: Mapped[str] = mapped_column(String(255))
    account_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("accounts.id"))
    #: Change of the balance, signed.
    amount: Mapped[Decimal] = mapped_column(Credits())
    #: Change of the debt, signed: > 0 a refund the balance could not cover, < 0 debt paid.
    debt_change: Mapped[Decimal] = mapped_column(Credits(), default=ZERO)
    reason: Mapped[str] = mapped_column(String(255))
    #: The webhook_events.id or PR job it came from, if any.
    event_id: Mapped[int | None] = mapped_column(BigInteger)
    job_id: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        UniqueConstraint("key", name="uq_credit_ledger_key"),
        Index("ix_credit_ledger_account", "account_id", "id"),
        Index("ix_credit_ledger_event", "event_id"),
        Index("ix_credit_ledger_job", "job_id"),
        # The few entries that changed a debt: `debts` sums only these (migration 0006).
        Index(
            "ix_credit_ledger_debt",
            "account_id",
            postgresql_where=text(_HAS_DEBT_CHANGE),
            sqlite_where=text(_HAS_DEBT_CHANGE),
        ),
    )


_ledger: Table = CreditEntry.__table__  # type: ignore[assignment]


class CreditHold(Base):
    """Credits reserved for work in progress; released (nothing taken) or captured (debited)."""

    __tablename__ = "credit_holds"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(255))
    account_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("accounts.id"))
    amount: Mapped[Decimal] = mapped_column(Credits())
    job_id: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    released_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    captured_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The ledger key of the debit a capture wrote.
    ledger_key: Mapped[str | None] = mapped_column(String(255))

    __table_args__ = (
        UniqueConstraint("key", name="uq_credit_holds_key"),
        CheckConstraint("amount > 0", name="ck_credit_holds_amount_positive"),
        Index("ix_credit_holds_open", "account_id", "released_at", "captured_at"),
    )

    @property
    def is_open(self) -> bool:
        return self.released_at is None and self.captured_at is None


@dataclass(frozen=True)
class Standing:
    """An account's credits at one moment."""

    balance: Decimal
    held: Decimal
    debt: Decimal

    @property
    def available(self) -> Decimal:
        return self.balance - self.held


# --- reads ---------------------------------------------------------------------------


def balance(session: Session, account_id: int) -> Decimal:
    """The sum of the account's ledger entries."""
    return _sum(session, CreditEntry.amount, CreditEntry.account_id == account_id)


def held(session: Session, account_id: int) -> Decimal:
    """Credits reserved by the account's open holds."""
    return _sum(
        session,
        CreditHold.amount,
        CreditHold.account_id == account_id,
        CreditHold.released_at.is_(None),
        CreditHold.captured_at.is_(None),
    )


def debt(session: Session, account_id: int) -> Decimal:
    """Credits refunded beyond what the account had, not yet paid back by later credits."""
    return _sum(session, CreditEntry.debt_change, CreditEntry.account_id == account_id)


def debts(session: Session, account_ids: Iterable[int]) -> dict[int, Decimal]:
    """The debt of each of these accounts that has any, in one statement."""
    rows = session.execute(_DEBTS, {"ids": sorted(set(account_ids))})
    owed = {account_id: Decimal(total or 0).quantize(ZERO) for account_id, total in rows}
    return {account_id: total for account_id, total in owed.items() if total != 0}


_DEBTS = (
    select(CreditEntry.account_id, func.sum(CreditEntry.debt_change))
    .where(
        CreditEntry.account_id.in_(bindparam("ids", expanding=True)),
        text(f"credit_ledger.{_HAS_DEBT_CHANGE}"),
    )
    .group_by(CreditEntry.account_id)
)


def _sum(session: Session, column: Any, *conditions: Any) -> Decimal:
    total = session.execute(
        select(func.coalesce(func.sum(column), ZERO)).where(*conditions)
    ).scalar_one()
    return Decimal(total).quantize(ZERO)


def available(session: Session, account_id: int) -> Decimal:
    """What the account may spend or hold now: its balance minus its open holds."""
    return balance(session, account_id) - held(session, account_id)


def standing(session: Session, account_id: int) -> Standing:
    return Standing(
        balance(session, account_id), held(session, account_id), debt(session, account_id)
    )


def entry_for_key(session: Session, key: str) -> CreditEntry | None:
    return session.execute(select(CreditEntry).where(CreditEntry.key == key)).scalar_one_or_none()


def applied_keys(session: Session, keys: Iterable[str]) -> set[str]:
    """Those of these keys that already have a ledger entry."""
    return set(session.scalars(_APPLIED_KEYS, {"keys": sorted(set(keys))}))


_APPLIED_KEYS = select(CreditEntry.key).where(
    CreditEntry.key.in_(bindparam("keys", expanding=True))
)


def history(session: Session, account_id: int, *, limit: int | None = None) -> list[CreditEntry]:
    """The account's entries, oldest first (the last `limit` of them when given)."""
    query = select(CreditEntry).where(CreditEntry.account_id == account_id)
    if limit is None:
        return list(session.execute(query.order_by(CreditEntry.id)).scalars())
    newest = session.execute(query.order_by(CreditEntry.id.desc()).limit(limit)).scalars()
    return list(reversed(list(newest)))


def effects_of_event(session: Session, event_id: int) -> list[dict[str, object]]:
    """The ledger entries a webhook event wrote (for `outbox events show`)."""
    rows = session.execute(
        select(CreditEntry).where(CreditEntry.event_id == event_id).order_by(CreditEntry.id)
    ).scalars()
    return [
        {
            "table": "credit_ledger",
            "id": row.id,
            "account_id": row.account_id,
            "amount": str(row.amount),
            "debt_change": str(row.debt_change),
            "key": row.key,
            "reason": row.reason,
        }
        for row in rows
    ]


# --- writes --------------------------------------------------------------------------


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

    The entries are written with one executemany and are not read back: those returned
    have no id.
    """
    entries = _credit_entries(session, credits, now)
    _write_entries(session, entries)
    return entries


def _write_entries(session: Session, entries: Sequence[Entry | None]) -> None:
    """Insert the entries written now (None: a key applied before), in their order."""
    rows = [vars(entry) for entry in entries if entry is not None]
    if rows:
        session.execute(insert(_ledger), rows)


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


def availables(session: Session, account_ids: Iterable[int]) -> dict[int, Decimal]:
    """`available` of each of these accounts, in two statements."""
    wanted = sorted(set(account_ids))
    found = {account_id: ZERO for account_id in wanted}
    for account_id, total in session.execute(_BALANCES, {"ids": wanted}):
        found[account_id] += Decimal(total or 0).quantize(ZERO)
    for account_id, total in session.execute(_HELD, {"ids": wanted}):
        found[account_id] -= Decimal(total or 0).quantize(ZERO)
    return found


_BALANCES = (
    select(CreditEntry.account_id, func.sum(CreditEntry.amount))
    .where(CreditEntry.account_id.in_(bindparam("ids", expanding=True)))
    .group_by(CreditEntry.account_id)
)
_HELD = (
    select(CreditHold.account_id, func.sum(CreditHold.amount))
    .where(
        CreditHold.account_id.in_(bindparam("ids", expanding=True)),
        CreditHold.released_at.is_(None),
        CreditHold.captured_at.is_(None),
    )
    .group_by(CreditHold.account_id)
)


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
