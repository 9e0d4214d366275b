"""Usage records: one per successful paid job, reported once to a Stripe billing meter.

A record is written in the transaction that marks its job `success`; a worker then reports
it to Stripe (domain/usage_reports.py). Here: the table, writing a record, and what an
operator does with a record that stopped for one (`resolve_reported`, `resolve_resend`)
and the listings.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Index,
    Integer,
    String,
    Text,
    select,
    text,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from domain.accounts import Account
from domain.credits import Credits
from outbox.session import Base, BigId, UTCDateTime


class UsageRecord(Base):
    __tablename__ = "usage_records"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    #: "pr_job:<id>": the meter event's identifier and idempotency key derive from it.
    key: Mapped[str] = mapped_column(String(255), unique=True)
    account_id: Mapped[int] = mapped_column(BigInteger, index=True)
    job_id: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    quantity: Mapped[Decimal] = mapped_column(Credits())
    meter_event_name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: When Stripe accepted it (or said it already had it); None while unreported.
    reported_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The customer it was reported for.
    stripe_customer_id: Mapped[str | None] = mapped_column(String(255))
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    #: The first attempt (under the current identifier) that may have reached Stripe.
    uncertain_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: When it stopped for an operator: Stripe may have it and would soon forget its identifier.
    needs_operator_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Times an operator had it sent again; each resend has an identifier of its own.
    resends: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    #: The webhook event its job came from, if any.
    event_id: Mapped[int | None] = mapped_column(BigInteger, index=True)

    __table_args__ = (
        Index(
            "ix_usage_records_unreported",
            "next_attempt_at",
            postgresql_where=text("reported_at IS NULL"),
            sqlite_where=text("reported_at IS NULL"),
        ),
    )

    @property
    def identifier(self) -> str:
        return meter_identifier(self.key, self.resends or 0)


def meter_identifier(key: str, resends: int = 0) -> str:
    """The meter event's `identifier`, also sent as its `Idempotency-Key`; a resend an
    operator asked for gets one of its own, which Stripe cannot match to earlier attempts."""
    return f"usage:{key}" if resends == 0 else f"usage:{key}:resend-{resends}"


def record_usage(
    session: Session,
    *,
    key: str,
    account_id: int,
    job_id: int | None,
    quantity: Decimal,
    meter_event_name: str,
    now: datetime,
    event_id: int | None = None,
) -> UsageRecord:
    """Write one usage record, due for reporting now (inside the caller's transaction)."""
    record = UsageRecord(
        key=key,
        account_id=account_id,
        job_id=job_id,
        quantity=quantity,
        meter_event_name=meter_event_name,
        created_at=now,
        attempts=0,
        next_attempt_at=now,
        event_id=event_id,
    )
    session.add(record)
    session.flush()
    return record


# --- operators -------------------------------------------------------------------------------


class NoOperatorNeeded(Exception):
    """`outbox usage resolve` on a record that is not waiting for an operator."""


def resolve_reported(session: Session, record_id: int, *, now: datetime) -> UsageRecord:
    """An operator found the event in Stripe: the record is reported, never sent again."""
    record = _waiting_for_operator(session, record_id)
    record.reported_at = now
    record.needs_operator_at = None
    record.last_error = f"marked reported by an operator (identifier {record.identifier})"
    session.flush()
    return record


def resolve_resend(session: Session, record_id: int, *, now: datetime) -> UsageRecord:
    """An operator found no such event in Stripe: send it again, due now, under a fresh
    identifier and idempotency key. Stripe may still hold the old identifier (for an event
    it took and then dropped as invalid) and would answer "already exists" for an event it
    does not count; a fresh one is counted, whatever Stripe remembers."""
    record = _waiting_for_operator(session, record_id)
    record.resends = (record.resends or 0) + 1
    record.needs_operator_at = None
    record.uncertain_since = None
    record.next_attempt_at = now
    record.last_error = f"sent again by an operator as {record.identifier}"
    session.flush()
    return record


def _waiting_for_operator(session: Session, record_id: int) -> UsageRecord:
    record = session.execute(
        select(UsageRecord).where(UsageRecord.id == record_id).with_for_update()
    ).scalar_one_or_none()
    if record is None:
        raise LookupError(f"no usage record {record_id}")
    if record.needs_operator_at is None:
        state = "reported" if record.reported_at is not None else "still being reported"
        raise NoOperatorNeeded(f"usage record {record_id} does not need an operator ({state})")
    return record


def record_id_for_job(session: Session, job_id: int) -> int | None:
    return session.scalar(select(UsageRecord.id).where(UsageRecord.job_id == job_id))


def list_usage(
    session: Session,
    *,
    unreported: bool = False,
    account_id: int | None = None,
    limit: int = 100,
) -> list[dict[str, object]]:
    """Usage records as plain values, newest first, each with where its report stands."""
    query = (
        select(UsageRecord, Account.stripe_customer_id)
        .outerjoin(Account, Account.id == UsageRecord.account_id)
        .order_by(UsageRecord.id.desc())
        .limit(limit)
    )
    if unreported:
        query = query.where(UsageRecord.reported_at.is_(None))
    if account_id is not None:
        query = query.where(UsageRecord.account_id == account_id)
    return [_describe(record, customer) for record, customer in session.execute(query).all()]


def _describe(record: UsageRecord, customer: str | None) -> dict[str, object]:
    if record.reported_at is not None:
        state = "reported"
    elif record.needs_operator_at is not None:
        state = "needs operator"
    elif customer is None:
        state = "waiting for a Stripe customer"
    else:
        state = "retrying" if record.last_error else "due"
    return {
        "id": record.id,
        "key": record.key,
        "identifier": record.identifier,
        "account_id": record.account_id,
        "job_id": record.job_id,
        "quantity": str(record.quantity),
        "meter_event_name": record.meter_event_name,
        "state": state,
        "stripe_customer_id": record.stripe_customer_id or customer,
        "created_at": record.created_at,
        "reported_at": record.reported_at,
        "attempts": record.attempts,
        "next_attempt_at": record.next_attempt_at,
        "uncertain_since": record.uncertain_since,
        "needs_operator_at": record.needs_operator_at,
        "last_error": record.last_error,
        "event_id": record.event_id,
    }


def effects_of_event(session: Session, event_id: int) -> list[dict[str, object]]:
    """The usage records of jobs a webhook event made (for `outbox events show`)."""
    rows = session.scalars(
        select(UsageRecord).where(UsageRecord.event_id == event_id).order_by(UsageRecord.id)
    )
    return [
        {
            "table": "usage_records",
            "id": r.id,
            "key": r.key,
            "quantity": str(r.quantity),
            "reported_at": r.reported_at,
        }
        for r in rows
    ]
