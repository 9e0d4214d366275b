"""Subscription and invoice events, applied to their subscriptions' rows in one go.

`apply_subscription_events` takes a batch's `customer.subscription.*` and `invoice.*`
events together: it reads what each says (News), locks every subscription row they name
in one statement (ascending ids; the claim gives each subscription to one batch at a
time), finds each one's account among rows read in one more statement, merges the news
into the rows in the events' order (domain/subscriptions.py's rules), links the
customers subscription objects name, and writes the lot in two statements (the new rows,
the changed ones: domain/subscriptions.py's `write_subscriptions`). A single event is
the same call with one item, so one event alone and many together apply the same rules.

An event that cannot apply (no account yet: RetryLater; malformed: PermanentFailure)
writes nothing; the others still apply.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from domain import stripe_objects
from domain.accounts import Account, link_customers
from domain.subscriptions import (
    Change,
    InvoiceNews,
    Subscription,
    SubscriptionState,
    merge_change,
    new_subscription,
    subscriptions_for_update,
    write_subscriptions,
)
from outbox.handling import EventContext, Failed, NoEffect, RetryLater, apply_one

ONE_OFF_INVOICE = "a one-off invoice: no subscription to update"


@dataclass(frozen=True)
class News:
    """What one event says about its subscription, before its account is known."""

    subscription_id: str
    #: The event's Stripe `created` (for an object fetched during the attempt, not before it).
    at: datetime
    state: SubscriptionState | None
    invoice: InvoiceNews | None
    #: The account the object names (client_reference_id or metadata), if any.
    named: int | None
    customer: str | None
    #: Whether the named account is linked to the customer (a subscription object's news).
    links: bool

    def change(self, account_id: int) -> Change:
        return Change(
            subscription_id=self.subscription_id,
            account_id=account_id,
            at=self.at,
            state=self.state,
            invoice=self.invoice,
        )


def apply_subscription_event(
    session: Session, event: EventContext, fetched: Any
) -> NoEffect | None:
    """One subscription or invoice event: `apply_subscription_events` with one item."""
    return apply_one(apply_subscription_events, session, event, fetched)


def apply_subscription_events(
    session: Session, items: Sequence[tuple[EventContext, Any]]
) -> list[Failed | NoEffect | None]:
    """Apply subscription and invoice events (with the subscription object `prepare`
    fetched, or None); one result per event, in order: None (applied), NoEffect (it says
    nothing about a subscription), or why it failed (it wrote nothing)."""
    results: list[Failed | NoEffect | None] = [None] * len(items)
    read: list[tuple[int, EventContext, News]] = []
    for index, (event, fetched) in enumerate(items):
        try:
            news = read_news(event, fetched)
        except Exception as exc:  # PermanentFailure: a malformed event
            results[index] = Failed(exc)
            continue
        if isinstance(news, NoEffect):
            results[index] = news
        else:
            read.append((index, event, news))
    if not read:
        return results
    rows = subscriptions_for_update(session, (news.subscription_id for _, _, news in read))
    loaded = list(rows.values())
    book = _AccountBook.read(
        session, [news for _, _, news in read], [row.account_id for row in rows.values()]
    )
    links: list[tuple[int, str]] = []
    created: dict[str, Subscription] = {}
    # In the events' order (the claim's): the row each one leaves is what the next one sees.
    for index, event, news in sorted(read, key=lambda item: item[1].id):
        row = rows.get(news.subscription_id)
        try:
            account_id = row.account_id if row is not None else book.account_for(news)
        except RetryLater as exc:
            results[index] = Failed(exc)
            continue
        if news.links and news.customer is not None and book.link(account_id, news.customer):
            links.append((account_id, news.customer))
        change = news.change(account_id)
        if row is None:
            row = rows[news.subscription_id] = new_subscription(change, now=event.now)
            created[row.id] = row
            merge_change(row, change, created=True, now=event.now, event_id=event.id)
        else:
            merge_change(row, change, created=False, now=event.now, event_id=event.id)
    if links:
        link_customers(session, links, now=max(event.now for _, event, _ in read))
    changed = [row for row in loaded if session.is_modified(row)]
    write_subscriptions(session, list(created.values()), changed)
    return results


def read_news(event: EventContext, fetched: Any) -> News | NoEffect:
    """What the event says about its subscription; NoEffect when it says nothing (a
    one-off invoice, an invoice whose billing reason says nothing); PermanentFailure when
    it is malformed."""
    if not event.event_type.startswith("invoice."):
        obj = fetched if fetched is not None else stripe_objects.event_object(event)
        return _object_news(event, obj, fetched=fetched is not None)
    invoice = stripe_objects.event_object(event)
    subscription_id = stripe_objects.invoice_subscription(invoice)
    if subscription_id is None:
        return NoEffect(ONE_OFF_INVOICE)
    if fetched is not None:
        return _object_news(event, fetched, fetched=True)
    said = invoice_news(event.event_type, invoice)
    if said is None:
        return NoEffect(
            f"{event.event_type} of a {invoice.get('billing_reason')} invoice says nothing "
            "about its subscription"
        )
    return News(
        subscription_id=subscription_id,
        at=stripe_objects.event_time(event),
        state=None,
        invoice=said,
        named=stripe_objects.named_account(invoice, *stripe_objects.INVOICE_ACCOUNT_PATHS),
        customer=stripe_objects.object_id(invoice.get("customer")),
        links=False,  # only a subscription object may link its customer
    )


def _object_news(event: EventContext, obj: dict[str, Any], *, fetched: bool) -> News:
    state = stripe_objects.subscription_state(obj)
    named = stripe_objects.named_account(obj)
    at = stripe_objects.event_time(event)
    return News(
        subscription_id=state.subscription_id,
        # Read during this attempt, the object is news as of the attempt's start.
        at=max(at, event.now) if fetched else at,
        state=state,
        invoice=None,
        named=named,
        customer=state.stripe_customer_id,
        links=named is not None,
    )


def invoice_news(event_type: str, invoice: dict[str, Any]) -> InvoiceNews | None:
    """What an invoice event says about its subscription, by the invoice's billing_reason
    (https://docs.stripe.com/api/invoices/object#invoice_object-billing_reason): the first
    invoice (`subscription_create`) paid, another one paid, or a renewal
    (`subscription_cycle`) failed. Any other failure says nothing: a first invoice that
    fails leaves the subscription `incomplete`, and its own object says when it is past due."""
    reason = invoice.get("billing_reason")
    if event_type == "invoice.paid":
        return InvoiceNews.FIRST_PAID if reason == "subscription_create" else InvoiceNews.PAID
    if event_type == "invoice.payment_failed" and reason == "subscription_cycle":
        return InvoiceNews.PAYMENT_FAILED
    return None


class _AccountBook:
    """The accounts a batch's news may belong to (those named, those of the customers
    named), read once, and the customer links the batch makes, kept as it makes them."""

    def __init__(self, customers: dict[int, str | None]) -> None:
        #: account id -> its customer (None: none linked)
        self.customers = customers
        #: customer -> its account
        self.owners = {c: a for a, c in customers.items() if c is not None}

    @classmethod
    def read(cls, session: Session, news: Iterable[News], recorded: Iterable[int]) -> _AccountBook:
        """The accounts `news` names or whose customers it names, and those of the
        subscriptions already `recorded`."""
        named, customers = set(recorded), set()
        for item in news:
            if item.named is not None:
                named.add(item.named)
            if item.customer is not None:
                customers.add(item.customer)
        if not named and not customers:
            return cls({})
        wanted = or_(
            Account.id.in_(sorted(named)), Account.stripe_customer_id.in_(sorted(customers))
        )
        rows = session.execute(select(Account.id, Account.stripe_customer_id).where(wanted))
        return cls({account_id: customer for account_id, customer in rows})

    def account_for(self, news: News) -> int:
        """The account of a subscription not recorded yet: the one named, else its
        customer's; RetryLater until one of these exists."""
        if news.named is not None:
            if news.named not in self.customers:
                raise RetryLater(f"account {news.named} does not exist yet")
            return news.named
        owner = self.owners.get(news.customer) if news.customer is not None else None
        if owner is not None:
            return owner
        raise RetryLater(
            f"subscription {news.subscription_id}: no account yet for Stripe customer "
            f"{news.customer} (set metadata.{stripe_objects.ACCOUNT_KEY}, or "
            "`outbox accounts link`)"
        )

    def link(self, account_id: int, customer: str) -> bool:
        """Whether linking them is new and allowed (accounts.link_customer's rule: an
        account with no customer, a customer no account has; an earlier link stands)."""
        if customer in self.owners or self.customers.get(account_id) is not None:
            return False
        self.customers[account_id] = customer
        self.owners[customer] = account_id
        return True
