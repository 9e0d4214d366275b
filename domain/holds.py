"""Credit holds: credits reserved for work in progress (a PR job), then captured (debited
once, the work succeeded) or released (nothing taken, the work failed).

`available` is the balance minus the open holds (domain/balances.py), and a hold only ever
takes from `available`, so capturing a hold can never drive the balance below zero.

Debt is settled first from any credits that come back to the account, a released hold
included: a refund that found its credits held records debt, and releasing that hold (the
job failed) must not make refunded credits spendable again. Releasing a hold of H while the
account owes D writes one entry `settle:<hold key>` of amount -min(H, D) and debt_change
-min(H, D); only the rest becomes available. So `available` never exceeds the credits paid
for and not taken back, the debt never goes below zero, and neither does the balance.
A captured hold is debited as usual, and any debt stays owed.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from domain.account_locks import lock_account
from domain.balances import debt, entry_for_key
from domain.credits import positive_credits
from domain.ledger import append_entry, require_available, spend
from domain.ledger_tables import ZERO, CreditEntry, CreditHold


def hold(
    session: Session,
    account_id: int,
    amount: Decimal | int | str,
    *,
    key: str,
    now: datetime,
    job_id: int | None = None,
) -> CreditHold:
    """Reserve credits (InsufficientCredits if short); the same key returns the same hold."""
    amount = positive_credits(amount)
    lock_account(session, account_id)
    existing = _hold_for_key(session, key)
    if existing is not None:
        return existing
    require_available(session, account_id, amount)
    row = CreditHold(key=key, account_id=account_id, amount=amount, job_id=job_id, created_at=now)
    session.add(row)
    session.flush()
    return row


#: Ledger key of the entry that pays debt from a released hold.
SETTLE_KEY = "settle:{hold_key}"


def release_hold(session: Session, key: str, *, now: datetime) -> bool:
    """Give a hold's credits back; False if there is no such open hold (released or captured).

    Debt is paid first: while the account owes D, releasing a hold of H writes one entry
    `settle:<hold key>` of amount -min(H, D), debt_change -min(H, D) (so credits a refund
    took back while they were held never become available again); the rest is available.
    """
    row = _open_hold_locked(session, key)
    if row is None:
        return False
    row.released_at = now
    owed = debt(session, row.account_id)
    settled = min(row.amount, owed)
    if settled > 0:
        append_entry(
            session, row.account_id, -settled, -settled, key=SETTLE_KEY.format(hold_key=key),
            reason="released hold pays debt", now=now, job_id=row.job_id,
        )  # fmt: skip
    session.flush()
    return True


def capture_hold(
    session: Session,
    key: str,
    *,
    ledger_key: str,
    reason: str,
    now: datetime,
    job_id: int | None = None,
) -> CreditEntry | None:
    """Turn an open hold into one debit of its amount; None when it was already captured.

    A hold released before its capture (its work came back after all) is charged as a plain
    spend, which raises InsufficientCredits if the credits have gone meanwhile. No hold
    with this key at all: LookupError.
    """
    row = _hold_for_key(session, key)
    if row is None:
        raise LookupError(f"no credit hold with key {key!r}")
    lock_account(session, row.account_id)
    session.refresh(row)
    if row.captured_at is not None or entry_for_key(session, ledger_key) is not None:
        return None
    job_id = job_id if job_id is not None else row.job_id
    if row.released_at is not None:
        return spend(
            session, row.account_id, row.amount, key=ledger_key, reason=reason, now=now,
            job_id=job_id,
        )  # fmt: skip
    # The held amount is already counted out of `available`, and the balance covers every
    # open hold, so this debit cannot drive the balance below zero.
    row.captured_at = now
    row.ledger_key = ledger_key
    return append_entry(
        session, row.account_id, -row.amount, ZERO, key=ledger_key, reason=reason, now=now,
        job_id=job_id,
    )  # fmt: skip


def _hold_for_key(session: Session, key: str) -> CreditHold | None:
    return session.execute(select(CreditHold).where(CreditHold.key == key)).scalar_one_or_none()


def _open_hold_locked(session: Session, key: str) -> CreditHold | None:
    row = _hold_for_key(session, key)
    if row is None:
        return None
    lock_account(session, row.account_id)
    session.refresh(row)
    return row if row.is_open else None
