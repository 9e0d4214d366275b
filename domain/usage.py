"""Usage records: one per successful paid job, reported once to a Stripe billing meter.

A record is written in the transaction that marks its job `success`. A separate worker
reports it as a meter event for the account's Stripe customer, with `identifier` and
`Idempotency-Key` both derived from the record, so a report repeated after a crash is
recognised by Stripe (400 "An event already exists with identifier", which means done).
A failed report is tried again per the retry policy's delays: usage is money owed, never
dropped. A record of an account without a Stripe customer waits, and is reported once the
account is linked to one.

Stripe remembers an identifier (and an idempotency key) for about 24 hours only. An attempt
that got no definite answer (no answer at all, a 5xx, a 409) may have recorded the event:
`uncertain_since` keeps the first such attempt, and once USAGE_RESEND_WINDOW_HOURS have
passed since, the record is never sent again on its own: it stops, `needs operator`, until
an operator resolves it (`resolve_reported` after finding the event in Stripe, or
`resolve_resend` to send it again under a fresh identifier).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

import stripe
from sqlalchemy import (
    BigInteger,
    Index,
    Integer,
    String,
    Text,
    and_,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from domain.accounts import Account
from domain.credits import Credits
from outbox.db import Base, UTCDateTime
from outbox.models import BigId
from outbox.retry import RetryPolicy

#: Stripe takes meter events dated at most this far back (its limit is 35 calendar days).
METER_EVENT_MAX_AGE = timedelta(days=34)
ALREADY_REPORTED = "An event already exists with identifier"
#: Stripe's answers after which it may have recorded the event: 5xx, and 409 (another
#: request with the same idempotency key is in flight). No answer at all is the other case.
UNCERTAIN_STATUSES = frozenset({409})


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


# --- reporting -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClaimedUsage:
    """A record this worker reports, with everything Stripe needs (no session)."""

    id: int
    lease_owner: str
    attempts: int
    identifier: str
    event_name: str
    stripe_customer_id: str
    value: str
    timestamp: int
    #: When this attempt was claimed (it is sent right after).
    claimed_at: datetime
    uncertain_since: datetime | None = None


class StripeUnavailable(Exception):
    """Stripe did not accept the meter event this time; the record is tried again later.

    :param uncertain: Stripe may have recorded it all the same (no answer, a 5xx, a 409).
    """

    def __init__(self, reason: str, *, uncertain: bool) -> None:
        super().__init__(reason)
        self.uncertain = uncertain


def _due(now: datetime) -> object:
    return and_(
        UsageRecord.reported_at.is_(None),
        UsageRecord.next_attempt_at <= now,
        or_(UsageRecord.lease_expires_at.is_(None), UsageRecord.lease_expires_at <= now),
        # Waiting for the account to be linked to a Stripe customer: not due until then.
        Account.stripe_customer_id.is_not(None),
    )


def due_usage_ids(session: Session, now: datetime, limit: int) -> list[int]:
    """Unreported records that can be reported now, oldest first (a sweep source)."""
    return list(
        session.scalars(
            select(UsageRecord.id)
            .join(Account, Account.id == UsageRecord.account_id)
            .where(_due(now))  # type: ignore[arg-type]
            .order_by(UsageRecord.next_attempt_at, UsageRecord.id)
            .limit(limit)
        )
    )


def claim_usage(
    session: Session,
    record_id: int,
    *,
    now: datetime,
    lease: timedelta,
    owner: str,
    window: timedelta,
) -> ClaimedUsage | None:
    """Take a due record under a lease; None when it is not due (reported, taken, no customer)
    or when it must stop for an operator: an earlier attempt may have reached Stripe more
    than `window` ago, so Stripe may no longer recognise its identifier."""
    customer = (
        select(Account.stripe_customer_id)
        .where(Account.id == UsageRecord.account_id)
        .scalar_subquery()
    )
    free = and_(
        UsageRecord.id == record_id,
        UsageRecord.reported_at.is_(None),
        UsageRecord.needs_operator_at.is_(None),
        UsageRecord.next_attempt_at <= now,
        or_(UsageRecord.lease_expires_at.is_(None), UsageRecord.lease_expires_at <= now),
    )
    taken = session.execute(
        update(UsageRecord)
        .where(
            free,
            customer.is_not(None),
            or_(UsageRecord.uncertain_since.is_(None), UsageRecord.uncertain_since > now - window),
        )
        .values(
            lease_owner=owner,
            lease_expires_at=now + lease,
            attempts=UsageRecord.attempts + 1,
        )
        .execution_options(synchronize_session=False)
    )
    if taken.rowcount != 1:  # type: ignore[attr-defined]
        session.execute(
            update(UsageRecord)
            .where(free, UsageRecord.uncertain_since <= now - window)
            .values(needs_operator_at=now, next_attempt_at=None, last_error=_stopped(window))
            .execution_options(synchronize_session=False)
        )
        return None
    row = session.execute(
        select(UsageRecord, Account.stripe_customer_id)
        .join(Account, Account.id == UsageRecord.account_id)
        .where(UsageRecord.id == record_id)
        .execution_options(populate_existing=True)
    ).one()
    record, stripe_customer = row
    dated = record.created_at if now - record.created_at < METER_EVENT_MAX_AGE else now
    return ClaimedUsage(
        id=record.id,
        lease_owner=owner,
        attempts=record.attempts,
        identifier=record.identifier,
        event_name=record.meter_event_name,
        stripe_customer_id=str(stripe_customer),  # the claim required one
        value=_meter_value(record.quantity),
        timestamp=int(dated.timestamp()),
        claimed_at=now,
        uncertain_since=record.uncertain_since,
    )


def _stopped(window: timedelta) -> str:
    hours = f"{window.total_seconds() / 3600:g}"
    return (
        f"needs an operator: an attempt may have reached Stripe {hours} h or more ago and "
        "Stripe may no longer know its identifier; check Stripe, then "
        "`outbox usage resolve ID --reported` or `--resend`"
    )


def _meter_value(quantity: Decimal) -> str:
    """Stripe wants the value as a decimal string: '3', '2.5' (never an exponent form)."""
    return format(quantity.normalize(), "f")


def report(client: stripe.StripeClient, claimed: ClaimedUsage) -> bool:
    """Send the meter event; True when Stripe took it now, False when it already had it.

    Raises StripeUnavailable for anything else (network, 5xx, 429, a refusal): tried again,
    `uncertain` when Stripe may have recorded the event all the same.
    """
    try:
        client.v1.billing.meter_events.create(
            {
                "event_name": claimed.event_name,
                "identifier": claimed.identifier,
                "timestamp": claimed.timestamp,
                "payload": {
                    "stripe_customer_id": claimed.stripe_customer_id,
                    "value": claimed.value,
                },
            },
            {"idempotency_key": claimed.identifier},
        )
    except stripe.InvalidRequestError as exc:
        if exc.http_status == 400 and ALREADY_REPORTED in str(exc.user_message or exc):
            return False
        raise StripeUnavailable(
            f"Stripe refused the meter event: {exc.user_message}",
            uncertain=_uncertain(exc.http_status),
        ) from exc
    except stripe.StripeError as exc:
        status = exc.http_status or "no answer"
        raise StripeUnavailable(
            f"Stripe did not take the meter event ({status}): {exc.user_message or exc!r}",
            uncertain=_uncertain(exc.http_status),
        ) from exc
    return True


def _uncertain(status: int | None) -> bool:
    """Whether Stripe may have recorded the event though it did not say so."""
    return status is None or status >= 500 or status in UNCERTAIN_STATUSES


def mark_reported(
    session: Session, claimed: ClaimedUsage, *, now: datetime, note: str | None = None
) -> bool:
    """Stripe has the event: the record is reported (False when our lease was lost)."""
    done = session.execute(
        update(UsageRecord)
        .where(
            UsageRecord.id == claimed.id,
            UsageRecord.lease_owner == claimed.lease_owner,
            UsageRecord.reported_at.is_(None),
        )
        .values(
            reported_at=now,
            stripe_customer_id=claimed.stripe_customer_id,
            lease_owner=None,
            lease_expires_at=None,
            next_attempt_at=None,
            last_error=note,
        )
        .execution_options(synchronize_session=False)
    )
    return done.rowcount == 1  # type: ignore[attr-defined,no-any-return]


def report_failed(
    session: Session,
    claimed: ClaimedUsage,
    reason: str,
    *,
    now: datetime,
    policy: RetryPolicy,
    uncertain: bool,
    window: timedelta,
) -> bool:
    """Stripe did not take it: due again after the policy's delay (capped, never dead), or
    stopped for an operator when that would be past `window` after the first attempt that
    may have reached Stripe (this one, when `uncertain`)."""
    since = claimed.uncertain_since or (claimed.claimed_at if uncertain else None)
    next_at = now + policy.delay(claimed.attempts)
    stop = since is not None and next_at >= since + window
    done = session.execute(
        update(UsageRecord)
        .where(UsageRecord.id == claimed.id, UsageRecord.lease_owner == claimed.lease_owner)
        .values(
            next_attempt_at=None if stop else next_at,
            needs_operator_at=now if stop else None,
            uncertain_since=since,
            lease_owner=None,
            lease_expires_at=None,
            last_error=f"{_stopped(window)} (last: {reason})"[:4000] if stop else reason[:4000],
        )
        .execution_options(synchronize_session=False)
    )
    return done.rowcount == 1  # type: ignore[attr-defined,no-any-return]


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
