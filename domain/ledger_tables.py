"""The credit ledger's tables: its entries, append-only, and the holds on an account's
credits.

An entry's `amount` is what it did to the balance (signed); the balance is the sum of an
account's amounts. Each entry has a unique idempotency `key` (`pack:<checkout session>`,
`welcome:<account>`, `job:<id>`), so applying the same thing twice writes nothing the
second time. `debt_change` is what it did to the account's debt (domain/ledger.py). A
hold reserves credits for work in progress (domain/holds.py) until it is released or
captured.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from domain.credits import Credits
from outbox.session import Base, BigId, UTCDateTime

ZERO = Decimal("0.0000")

#: Entries that changed a debt, written out (not a bound parameter) so that the planner
#: matches it with the partial index.
HAS_DEBT_CHANGE = "debt_change <> 0"


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
            postgresql_where=text(HAS_DEBT_CHANGE),
            sqlite_where=text(HAS_DEBT_CHANGE),
        ),
    )


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
