"""Subscriptions: what Stripe says about each subscription of an account, and whether the
account may use paid features.

One `subscriptions` row per Stripe subscription (an account usually has one; a cancelled
one followed by a new one are two rows, and the account's standing is the best of them).

Old news never wins. Stripe delivers events out of order and more than once, so each row
keeps the Stripe `created` time of the event it was last set from, in two parts:
`status_at` for the status (which `invoice.*` events also move) and `details_at` for the
price, period and cancel flag (which only subscription objects carry). An event older
than a part leaves that part alone. `canceled` and `incomplete_expired` are final in
Stripe, so once seen they stay, whatever arrives after. Together these make the row the
same whatever order the events arrive in.

A subscription object fetched from Stripe (with STRIPE_API_KEY set) is the current truth,
newer than any payload: it is applied whatever the times, and its times become at least
the event's.

Paid features: `active` and `trialing` yes; `past_due` until the grace period
(PAST_DUE_GRACE_DAYS) after it became past due; anything else no.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, Boolean, ForeignKey, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from outbox.db import Base, UTCDateTime

ENTITLED = frozenset({"active", "trialing"})
#: Statuses Stripe never leaves.
FINAL = frozenset({"canceled", "incomplete_expired"})
PAST_DUE = "past_due"


class Subscription(Base):
    __tablename__ = "subscriptions"

    #: Stripe's subscription id ("sub_…").
    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    account_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("accounts.id"), index=True)
    stripe_customer_id: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(32))
    price_id: Mapped[str | None] = mapped_column(String(255))
    current_period_end: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancel_at_period_end: Mapped[bool] = mapped_column(Boolean, default=False)
    #: When it became past due (the grace period counts from here).
    past_due_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Stripe `created` of the events the status, and the other fields, were last set from.
    status_at: Mapped[datetime] = mapped_column(UTCDateTime)
    details_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The webhook event that last changed this row.
    event_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    def may_use_paid_features(self, now: datetime, grace: timedelta) -> bool:
        if self.status in ENTITLED:
            return True
        if self.status == PAST_DUE and self.past_due_since is not None:
            return now < self.past_due_since + grace
        return False

    def as_dict(self, now: datetime, grace: timedelta) -> dict[str, Any]:
        return {
            "subscription": self.id,
            "account_id": self.account_id,
            "status": self.status,
            "price_id": self.price_id,
            "current_period_end": self.current_period_end,
            "cancel_at_period_end": self.cancel_at_period_end,
            "past_due_since": self.past_due_since,
            "paid_features": self.may_use_paid_features(now, grace),
            "as_of": self.status_at,
        }


@dataclass(frozen=True)
class SubscriptionState:
    """What one Stripe subscription object says (from an event's payload, or fetched)."""

    subscription_id: str
    status: str
    stripe_customer_id: str | None
    price_id: str | None
    current_period_end: datetime | None
    cancel_at_period_end: bool


@dataclass(frozen=True)
class Change:
    """One event's news about a subscription: a whole state, or only a status (invoices)."""

    subscription_id: str
    account_id: int
    #: The Stripe `created` time of the event.
    at: datetime
    status: str
    state: SubscriptionState | None = None
    #: The state was fetched from Stripe just now: newer than anything in a payload.
    fresh: bool = False


def subscription(session: Session, subscription_id: str) -> Subscription | None:
    return session.get(Subscription, subscription_id)


def apply_change(
    session: Session, change: Change, *, now: datetime, event_id: int | None = None
) -> bool:
    """Apply what an event says to its subscription's row; False when it changed nothing."""
    row = session.execute(
        select(Subscription).where(Subscription.id == change.subscription_id).with_for_update()
    ).scalar_one_or_none()
    if row is None:
        row = Subscription(
            id=change.subscription_id,
            account_id=change.account_id,
            status=change.status,
            cancel_at_period_end=False,
            status_at=change.at,
            updated_at=now,
        )
        session.add(row)
        _set_status(row, change.status, change.at)
        if change.state is not None:
            _set_details(row, change.state, change.at)
        row.event_id = event_id
        session.flush()
        return True
    changed = _merge_status(row, change)
    if change.state is not None and (
        change.fresh or row.details_at is None or change.at >= row.details_at
    ):
        at = max(change.at, row.details_at or change.at)
        changed = _set_details(row, change.state, at) or changed
    if changed:
        row.event_id = event_id
        row.updated_at = now
        session.flush()
    return changed


def _merge_status(row: Subscription, change: Change) -> bool:
    if row.status in FINAL and not change.fresh:
        return False
    both_past_due = change.status == PAST_DUE and row.status == PAST_DUE
    if both_past_due and row.past_due_since and change.at < row.past_due_since:
        # Whichever order the past-due news arrives in, the grace counts from the first.
        row.past_due_since = change.at
        return True
    newer = change.at >= row.status_at
    if not (newer or change.fresh or change.status in FINAL):
        return False
    before = (row.status, row.status_at)
    _set_status(row, change.status, max(change.at, row.status_at))
    return (row.status, row.status_at) != before


def _set_status(row: Subscription, status: str, at: datetime) -> None:
    if status != PAST_DUE:
        row.past_due_since = None
    elif row.status != PAST_DUE or row.past_due_since is None:
        row.past_due_since = at
    row.status = status
    row.status_at = at


def _details(row: Subscription) -> tuple[object, ...]:
    return (row.price_id, row.current_period_end, row.cancel_at_period_end, row.stripe_customer_id)


def _set_details(row: Subscription, state: SubscriptionState, at: datetime) -> bool:
    before = _details(row)
    row.price_id = state.price_id
    row.current_period_end = state.current_period_end
    row.cancel_at_period_end = state.cancel_at_period_end
    row.stripe_customer_id = state.stripe_customer_id or row.stripe_customer_id
    row.details_at = at
    return before != _details(row)


def subscriptions_of(session: Session, account_id: int) -> list[Subscription]:
    return list(
        session.execute(
            select(Subscription)
            .where(Subscription.account_id == account_id)
            .order_by(Subscription.status_at.desc(), Subscription.id)
        ).scalars()
    )


def may_use_paid_features(
    session: Session, account_id: int, *, now: datetime, grace: timedelta
) -> bool:
    """Whether any of the account's subscriptions entitles it to paid features now."""
    return any(
        sub.may_use_paid_features(now, grace) for sub in subscriptions_of(session, account_id)
    )


def effects_of_event(session: Session, event_id: int) -> list[dict[str, object]]:
    """The subscription rows a webhook event last changed (for `outbox events show`)."""
    rows = session.execute(select(Subscription).where(Subscription.event_id == event_id)).scalars()
    return [
        {"table": "subscriptions", "id": row.id, "account_id": row.account_id, "status": row.status}
        for row in rows
    ]
