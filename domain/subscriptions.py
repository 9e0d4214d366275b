"""Subscriptions: what Stripe says about each subscription of an account, and whether the
account may use paid features.

One `subscriptions` row per Stripe subscription (an account usually has one; a cancelled
one followed by a new one are two rows, and the account's standing is the best of them).

Stripe delivers events out of order, more than once, and several in one second (its
`created` has one-second resolution: a sign-up's subscription, first invoice and update
usually share a second). So a row does not keep "the last event applied"; it keeps the
news it has, each part merged so that any order of the same events gives the same row:

- the deciding subscription object (`object_status`, with its price, period and cancel
  flag; `details_at` is its event's `created`). An object replaces the one held unless that
  one ranks higher: a final status (`canceled`, `incomplete_expired`) above any other whatever the
  times; then the later `created`; then, in the same second, the later status in the
  lifecycle LIFECYCLE.
- the first invoice paid (`first_paid_at`, billing_reason `subscription_create`): an
  `incomplete` subscription is `active` (a trial's first invoice is a $0 one, paid, and
  leaves `trialing` alone).
- the newest renewal invoice (`invoice_status` `paid` or `payment_failed`, at
  `invoice_at`; ranked like objects): a paid one makes `incomplete`, `past_due` or
  `unpaid` `active`; a failed renewal (billing_reason `subscription_cycle`) makes `active`
  `past_due`, never `trialing`, `incomplete` or a final status. A failed first invoice
  changes nothing: Stripe keeps the subscription `incomplete`, and its own object says when
  it is `past_due`.

An invoice moves the status only when it is strictly newer than the deciding object: an
object of the same second or later decides.

`status` is what these say together (_status_from_news); `status_at` is the newest time of
the news held. Stripe's statuses and billing reasons:
https://docs.stripe.com/billing/subscriptions/overview#subscription-statuses
https://docs.stripe.com/api/invoices/object#invoice_object-billing_reason

A subscription object fetched from Stripe (with STRIPE_API_KEY set) is news as of the
attempt that fetched it (never older than its event): it replaces what is held by the same
rule, so it never overwrites a final status or an object of a later time.

Paid features: `active` and `trialing` yes (Stripe's entitlements treat a trial as active
access); `past_due` until the grace period (PAST_DUE_GRACE_DAYS) after it became past due;
anything else no.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    String,
    Table,
    select,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from outbox.session import Base, UTCDateTime, insert_all, write_over

INCOMPLETE, TRIALING, ACTIVE, PAST_DUE, UNPAID = (
    "incomplete", "trialing", "active", "past_due", "unpaid"
)  # fmt: skip
ENTITLED = frozenset({ACTIVE, TRIALING})
#: Statuses Stripe never leaves.
FINAL = frozenset({"canceled", "incomplete_expired"})
#: Stripe's statuses in the order a subscription's life goes through them, the final ones
#: after all: among news of the same second, the later status wins.
LIFECYCLE = (INCOMPLETE, TRIALING, ACTIVE, PAST_DUE, UNPAID, "paused")


def _rank(status: str) -> int:
    """A status's place in LIFECYCLE: the final ones share the last place, one Stripe adds
    later takes the first."""
    if status in FINAL:
        return len(LIFECYCLE)
    return LIFECYCLE.index(status) if status in LIFECYCLE else -1


class InvoiceNews(StrEnum):
    """What an invoice event says about its subscription."""

    #: The first invoice (billing_reason `subscription_create`) was paid.
    FIRST_PAID = "first_paid"
    #: Another invoice was paid (a renewal, an update, a retried renewal).
    PAID = "paid"
    #: A renewal (billing_reason `subscription_cycle`) failed.
    PAYMENT_FAILED = "payment_failed"


#: The status each renewal invoice's news points to, to rank two of the same second.
_INVOICE_STATUS = {InvoiceNews.PAID: ACTIVE, InvoiceNews.PAYMENT_FAILED: PAST_DUE}


class Subscription(Base):
    __tablename__ = "subscriptions"

    #: Stripe's subscription id ("sub_…").
    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    account_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("accounts.id"), index=True)
    stripe_customer_id: Mapped[str | None] = mapped_column(String(255))
    #: What the news held says together (see the module doc).
    status: Mapped[str] = mapped_column(String(32))
    price_id: Mapped[str | None] = mapped_column(String(255))
    current_period_end: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancel_at_period_end: Mapped[bool] = mapped_column(Boolean, default=False)
    #: When it became past due (the grace period counts from here).
    past_due_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The newest Stripe `created` of the news held.
    status_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: The deciding subscription object's status, and its event's time (with the details).
    object_status: Mapped[str | None] = mapped_column(String(32))
    details_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: When the first invoice was paid (None: not seen paid).
    first_paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The newest renewal invoice's news (InvoiceNews.PAID or PAYMENT_FAILED) and its time.
    invoice_status: Mapped[str | None] = mapped_column(String(32))
    invoice_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
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
    """One event's news about a subscription: a subscription object, or an invoice's news."""

    subscription_id: str
    account_id: int
    #: The Stripe `created` time of the event (for a fetched object, the attempt's time).
    at: datetime
    state: SubscriptionState | None = None
    invoice: InvoiceNews | None = None

    @property
    def says_past_due(self) -> bool:
        if self.state is not None:
            return self.state.status == PAST_DUE
        return self.invoice == InvoiceNews.PAYMENT_FAILED


def subscription(session: Session, subscription_id: str) -> Subscription | None:
    return session.get(Subscription, subscription_id)


def apply_change(
    session: Session, change: Change, *, now: datetime, event_id: int | None = None
) -> bool:
    """Merge what an event says into its subscription's row; False when it changed nothing."""
    row = session.execute(
        select(Subscription).where(Subscription.id == change.subscription_id).with_for_update()
    ).scalar_one_or_none()
    created = row is None
    if row is None:
        row = new_subscription(change, now=now)
        session.add(row)
    if not merge_change(row, change, created=created, now=now, event_id=event_id):
        return False
    session.flush()
    return True


def subscriptions_for_update(session: Session, ids: Iterable[str]) -> dict[str, Subscription]:
    """The rows of these subscriptions that exist, locked in ascending id order."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    rows = session.execute(
        select(Subscription)
        .where(Subscription.id.in_(wanted))
        .order_by(Subscription.id)
        .with_for_update()
    ).scalars()
    return {row.id: row for row in rows}


def write_subscriptions(
    session: Session, created: Sequence[Subscription], changed: Sequence[Subscription]
) -> None:
    """Write subscription rows made or merged in memory (not added to the session): the
    new ones in one statement (`insert_all`), the changed ones (read and locked by
    `subscriptions_for_update`) over theirs in one more (`write_over`, both of
    outbox/session.py), and those leave the session."""
    insert_all(session, _subscriptions, [_values(row) for row in created])
    write_over(session, _subscriptions, changed)


_subscriptions: Table = Subscription.__table__  # type: ignore[assignment]


def _values(row: Subscription) -> dict[str, Any]:
    """The row's column values, by column name."""
    return {column.name: getattr(row, column.key) for column in _subscriptions.columns}


def new_subscription(change: Change, *, now: datetime) -> Subscription:
    """The row of a subscription first heard of by `change`, before its news is merged."""
    return Subscription(
        id=change.subscription_id,
        account_id=change.account_id,
        status=INCOMPLETE,
        cancel_at_period_end=False,
        status_at=change.at,
        updated_at=now,
    )


def merge_change(
    row: Subscription, change: Change, *, created: bool, now: datetime, event_id: int | None
) -> bool:
    """Merge `change` into `row` (not written: the caller flushes); False when a row not
    `created` by this change kept everything it held."""
    before = _held(row)
    if change.state is not None:
        _take_object(row, change.state, change.at)
    elif change.invoice == InvoiceNews.FIRST_PAID:
        row.first_paid_at = min(change.at, row.first_paid_at or change.at)
    elif change.invoice is not None:
        _take_invoice(row, change.invoice, change.at)
    _settle(row, change)
    if not created and _held(row) == before:
        return False
    row.event_id = event_id
    row.updated_at = now
    return True


def _held(row: Subscription) -> tuple[object, ...]:
    return (
        row.status, row.status_at, row.past_due_since, row.object_status, row.details_at,
        row.first_paid_at, row.invoice_status, row.invoice_at, *_details(row),
    )  # fmt: skip


def _object_rank(status: str, at: datetime) -> tuple[bool, datetime, int]:
    return (status in FINAL, at, _rank(status))


def _take_object(row: Subscription, state: SubscriptionState, at: datetime) -> None:
    """The object decides from now on, unless the one held ranks higher."""
    held, held_at = row.object_status, row.details_at
    if (
        held is not None
        and held_at is not None
        and (_object_rank(state.status, at) < _object_rank(held, held_at))
    ):
        return
    row.object_status = state.status
    row.price_id = state.price_id
    row.current_period_end = state.current_period_end
    row.cancel_at_period_end = state.cancel_at_period_end
    row.stripe_customer_id = state.stripe_customer_id or row.stripe_customer_id
    row.details_at = at


def _take_invoice(row: Subscription, news: InvoiceNews, at: datetime) -> None:
    if row.invoice_status is not None and row.invoice_at is not None:
        held = (row.invoice_at, _rank(_INVOICE_STATUS[InvoiceNews(row.invoice_status)]))
        if (at, _rank(_INVOICE_STATUS[news])) < held:
            return
    row.invoice_status = news.value
    row.invoice_at = at


def _status_from_news(row: Subscription) -> tuple[str, datetime | None]:
    """The status the news held says together, and the time of the news that decides it."""
    status, at = row.object_status, row.details_at
    if status in FINAL:
        return status, at
    first_paid = row.first_paid_at
    if status in (None, INCOMPLETE) and first_paid is not None and (at is None or first_paid > at):
        status, at = ACTIVE, first_paid
    invoice, invoice_at = row.invoice_status, row.invoice_at
    if invoice is not None and invoice_at is not None and (at is None or invoice_at > at):
        if invoice == InvoiceNews.PAID and status in (None, INCOMPLETE, PAST_DUE, UNPAID):
            status, at = ACTIVE, invoice_at
        elif invoice == InvoiceNews.PAYMENT_FAILED and status in (None, ACTIVE, PAST_DUE):
            status, at = PAST_DUE, invoice_at
    return status or INCOMPLETE, at


def _settle(row: Subscription, change: Change) -> None:
    """Set the status from the news held; the grace counts from the first past-due news of
    the current past-due spell, whichever order that news arrives in."""
    status, decided_at = _status_from_news(row)
    if status != PAST_DUE:
        row.past_due_since = None
    else:
        since = [decided_at, change.at if change.says_past_due else None]
        if row.status == PAST_DUE:
            since.append(row.past_due_since)
        row.past_due_since = min(filter(None, since), default=change.at)
    row.status = status
    times = (row.details_at, row.first_paid_at, row.invoice_at)
    row.status_at = max(filter(None, times), default=row.status_at)


def _details(row: Subscription) -> tuple[object, ...]:
    return (row.price_id, row.current_period_end, row.cancel_at_period_end, row.stripe_customer_id)


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
