"""What an account's credits are now, read from the ledger and its holds: the balance
(the sum of its entries), what its open holds reserve, its debt (refunds beyond what it
had, not yet paid back), and what it may spend or hold (`available`: the balance minus the
open holds); and the entries themselves (by key, an account's history, an event's).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Table, func, select, text
from sqlalchemy.orm import Session

from domain.ledger_tables import HAS_DEBT_CHANGE, ZERO, CreditEntry, CreditHold
from outbox.session import Query


@dataclass(frozen=True)
class Standing:
    """An account's credits at one moment."""

    balance: Decimal
    held: Decimal
    debt: Decimal

    @property
    def available(self) -> Decimal:
        return self.balance - self.held


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
    found = _DEBTS.rows(session, ids=sorted(set(account_ids)))
    owed = {account_id: Decimal(total or 0).quantize(ZERO) for account_id, total in found}
    return {account_id: total for account_id, total in owed.items() if total != 0}


#: The batch reads below select from the tables (Core), not the mapped classes: they read
#: plain values, and an ORM select costs a batch's statement twice the Python.
_entries: Table = CreditEntry.__table__  # type: ignore[assignment]
_holds: Table = CreditHold.__table__  # type: ignore[assignment]


#: The debt of each of the accounts `ids` that has a debt change.
_DEBTS = Query(
    lambda one_of: (
        select(_entries.c.account_id, func.sum(_entries.c.debt_change))
        .where(one_of(_entries.c.account_id, "ids"), text(f"credit_ledger.{HAS_DEBT_CHANGE}"))
        .group_by(_entries.c.account_id)
    )
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
    return {key for (key,) in _APPLIED_KEYS.rows(session, keys=sorted(set(keys)))}


#: Those of the ledger keys `keys` that have an entry.
_APPLIED_KEYS = Query(lambda one_of: select(_entries.c.key).where(one_of(_entries.c.key, "keys")))


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


def availables(session: Session, account_ids: Iterable[int]) -> dict[int, Decimal]:
    """`available` of each of these accounts, in two statements."""
    wanted = sorted(set(account_ids))
    found = {account_id: ZERO for account_id in wanted}
    for account_id, total in _BALANCES.rows(session, ids=wanted):
        found[account_id] += Decimal(total or 0).quantize(ZERO)
    for account_id, total in _HELD.rows(session, ids=wanted):
        found[account_id] -= Decimal(total or 0).quantize(ZERO)
    return found


#: The balance of each of the accounts `ids` that has entries.
_BALANCES = Query(
    lambda one_of: (
        select(_entries.c.account_id, func.sum(_entries.c.amount))
        .where(one_of(_entries.c.account_id, "ids"))
        .group_by(_entries.c.account_id)
    )
)
#: What the open holds of each of the accounts `ids` reserve.
_HELD = Query(
    lambda one_of: (
        select(_holds.c.account_id, func.sum(_holds.c.amount))
        .where(
            one_of(_holds.c.account_id, "ids"),
            _holds.c.released_at.is_(None),
            _holds.c.captured_at.is_(None),
        )
        .group_by(_holds.c.account_id)
    )
)
