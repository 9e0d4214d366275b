"""Disputes (chargebacks): a pack payment's credits taken back while its funds are withdrawn.

How Stripe runs a dispute: https://docs.stripe.com/disputes/how-disputes-work. The dispute
object's `status` (https://docs.stripe.com/api/disputes/object) is one of:
- `warning_needs_response`, `warning_under_review`, `warning_closed`: an inquiry; Stripe
  withdraws no funds, so it takes no credits;
- `needs_response`, `under_review`: a chargeback; the funds are withdrawn while it is
  decided, so the credits are taken back;
- `won`: the funds come back, so do the credits; `lost`: they stay taken.

The rules, whatever the order of `charge.dispute.created`, `charge.dispute.funds_withdrawn`
and `charge.dispute.closed` and however often each arrives:
- a dispute's share is the purchase's credits times its `amount` over what the checkout
  charged (`amount_total`; the whole purchase when that is unknown), rounded to 0.0001;
- it takes its share back as a refund would (what is available, the rest as debt) when an
  event shows its funds withdrawn: any status but `warning_*` and `won`. An open event never
  gives back what an earlier one took (an inquiry's `created` arriving after the chargeback's
  `funds_withdrawn` changes nothing);
- closing is final (`charge.dispute.closed`, or a closed status `won`, `lost`,
  `warning_closed`): `won` and `warning_closed` give back what the dispute took (a credit,
  paying debt first), any other closed status keeps it taken; every event about the dispute
  after that is ignored. So `closed`/`won` before `created` never takes anything, and
  `closed`/`lost` before `created` takes once;
- with the payment's refunds, never more than the purchase granted: each event writes only
  the change of the purchase's `taken_back` (domain/purchases.py), under the ledger key
  `dispute:<dispute id>` (taken) or `dispute-won:<dispute id>` (given back).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy import BigInteger, Boolean, ForeignKey, String, UniqueConstraint, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from domain import account_locks, ledger, ledger_tables
from domain.credits import QUANTUM, Credits, format_credits
from domain.purchases import CreditPurchase
from outbox.session import Base, BigId, UTCDateTime

#: Ledger key of what a dispute takes back, and of what it gives back once won.
TAKEN_KEY = "dispute:{dispute_id}"
GIVEN_BACK_KEY = "dispute-won:{dispute_id}"
#: Statuses of a dispute that is over.
CLOSED_STATUSES = frozenset({"won", "lost", "warning_closed"})
ZERO = Decimal("0.0000")


class CreditDispute(Base):
    """One Stripe dispute of a pack payment, and what it holds taken back now."""

    __tablename__ = "credit_disputes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    dispute_id: Mapped[str] = mapped_column(String(255))
    purchase_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("credit_purchases.id"))
    account_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("accounts.id"))
    #: The disputed amount, in the currency's minor unit.
    amount: Mapped[int] = mapped_column(BigInteger)
    #: The status of the last event applied.
    status: Mapped[str] = mapped_column(String(32))
    closed: Mapped[bool] = mapped_column(Boolean)
    #: The credits the disputed amount stands for, and of those what is taken back now.
    credits: Mapped[Decimal] = mapped_column(Credits())
    taken: Mapped[Decimal] = mapped_column(Credits())
    #: The webhook event that first reported it.
    event_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (UniqueConstraint("dispute_id", name="uq_credit_disputes_dispute"),)


@dataclass(frozen=True)
class Dispute:
    """A dispute as one event reports it."""

    dispute_id: str
    payment_intent_id: str
    #: The disputed amount, in the currency's minor unit.
    amount: int
    status: str
    #: Reported by `charge.dispute.closed`.
    closed: bool = False

    @property
    def final(self) -> bool:
        return self.closed or self.status in CLOSED_STATUSES

    @property
    def withdraws_funds(self) -> bool:
        """Stripe holds the funds withdrawn in this status: a chargeback, not an inquiry
        (`warning_*`), not won."""
        return not self.status.startswith("warning_") and self.status != "won"


def disputed_share(purchase: CreditPurchase, amount: int) -> Decimal:
    """The credits a disputed amount stands for: its fraction of what the checkout charged."""
    charged = purchase.amount_total
    if charged is None or charged <= 0 or amount >= charged:
        return purchase.credits
    fraction = Decimal(amount) / Decimal(charged)
    return (purchase.credits * fraction).quantize(QUANTUM, rounding=ROUND_HALF_UP)


def apply_dispute(
    session: Session,
    purchase: CreditPurchase,
    dispute: Dispute,
    *,
    now: datetime,
    event_id: int | None = None,
) -> ledger_tables.CreditEntry | None:
    """Move what the dispute takes back to what this event says (see the module doc);
    the ledger entry written, or None when nothing changed."""
    account_locks.lock_account(session, purchase.account_id)
    session.refresh(purchase)
    row = _dispute_row(session, dispute.dispute_id)
    if row is None:
        row = _new_row(purchase, dispute, now, event_id)
        session.add(row)
    elif row.closed:
        return None  # closing is final: later and older news changes nothing
    share = row.credits if dispute.withdraws_funds else ZERO
    taken = share if dispute.final else max(row.taken, share)
    before = purchase.taken_back
    purchase.disputed_credits += taken - row.taken
    row.taken, row.status, row.closed, row.updated_at = taken, dispute.status, dispute.final, now
    change = purchase.taken_back - before
    session.flush()
    if change > 0:
        return ledger.take_back(
            session, purchase.account_id, change,
            key=TAKEN_KEY.format(dispute_id=dispute.dispute_id),
            reason=_reason(dispute, purchase, f"{format_credits(change)} credits taken back"),
            now=now, event_id=event_id,
        )  # fmt: skip
    if change < 0:
        return ledger.credit(
            session, purchase.account_id, -change,
            key=GIVEN_BACK_KEY.format(dispute_id=dispute.dispute_id),
            reason=_reason(dispute, purchase, f"{format_credits(-change)} credits given back"),
            now=now, event_id=event_id,
        )  # fmt: skip
    return None


def _dispute_row(session: Session, dispute_id: str) -> CreditDispute | None:
    return session.execute(
        select(CreditDispute)
        .where(CreditDispute.dispute_id == dispute_id)
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()


def _new_row(
    purchase: CreditPurchase, dispute: Dispute, now: datetime, event_id: int | None
) -> CreditDispute:
    return CreditDispute(
        dispute_id=dispute.dispute_id,
        purchase_id=purchase.id,
        account_id=purchase.account_id,
        amount=dispute.amount,
        status=dispute.status,
        closed=False,
        credits=disputed_share(purchase, dispute.amount),
        taken=ZERO,
        event_id=event_id,
        created_at=now,
        updated_at=now,
    )


def _reason(dispute: Dispute, purchase: CreditPurchase, what: str) -> str:
    text = f"dispute {dispute.dispute_id} ({dispute.status}) of {purchase.description}: {what}"
    return text[:255]


def effects_of_event(session: Session, event_id: int) -> list[dict[str, object]]:
    """The disputes a webhook event first reported (for `outbox events show`)."""
    rows = session.execute(
        select(CreditDispute).where(CreditDispute.event_id == event_id).order_by(CreditDispute.id)
    ).scalars()
    return [
        {
            "id": row.id,
            "dispute_id": row.dispute_id,
            "account_id": row.account_id,
            "status": row.status,
            "credits": str(row.credits),
            "taken": str(row.taken),
        }
        for row in rows
    ]
