"""Reporting usage records to a Stripe billing meter, each once.

A worker claims a due record (domain/usage.py) under a lease and reports it as a meter
event for the account's Stripe customer, with `identifier` and `Idempotency-Key` both
derived from the record, so a report repeated after a crash is recognised by Stripe (400
"An event already exists with identifier", which means done).
A failed report is tried again per the retry policy's delays: usage is money owed, never
dropped. A record of an account without a Stripe customer waits, and is reported once the
account is linked to one.

Stripe remembers an identifier (and an idempotency key) for about 24 hours only. An attempt
that got no definite answer (no answer at all, a 5xx, a 409) may have recorded the event:
`uncertain_since` keeps the first such attempt, and once USAGE_RESEND_WINDOW_HOURS have
passed since, the record is never sent again on its own: it stops, `needs operator`, until
an operator resolves it (domain/usage.py: `resolve_reported` after finding the event in
Stripe, or `resolve_resend` to send it again under a fresh identifier).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

import stripe
from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from domain.accounts import Account
from domain.usage import UsageRecord
from outbox.handling import RetryPolicy

#: Stripe takes meter events dated at most this far back (its limit is 35 calendar days).
METER_EVENT_MAX_AGE = timedelta(days=34)
ALREADY_REPORTED = "An event already exists with identifier"
#: Stripe's answers after which it may have recorded the event: 5xx, and 409 (another
#: request with the same idempotency key is in flight). No answer at all is the other case.
UNCERTAIN_STATUSES = frozenset({409})


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
