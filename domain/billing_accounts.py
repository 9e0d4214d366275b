"""The accounts billing's events write: the batch locks them first, in id order
(outbox/handling.py). Each has its one-event form and its batch form (`_many`), where one
read serves all of a batch's events of a kind instead of one read per event.

A checkout writes the account it names, else its customer's (the grant credits it, the
link writes it); a refund or dispute the account of the purchase its payment made (the
ledger takes from it). An event too malformed to say locks nothing: its apply fails with
the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from domain import stripe_objects
from domain.accounts import Account, account_for_customer
from domain.purchases import CreditPurchase, purchase_for_payment
from outbox.handling import EventContext
from outbox.session import Query


def checkout_accounts(session: Session, event: EventContext, _fetched: Any) -> list[int]:
    """The account a checkout names, else its customer's (the grant credits it, the link
    writes it)."""
    obj = stripe_objects.event_object(event)
    named = stripe_objects.named_account(obj)
    if named is not None:
        return [named]
    customer = stripe_objects.object_id(obj.get("customer"))
    owner = account_for_customer(session, customer) if customer is not None else None
    return [owner.id] if owner is not None else []


def payment_accounts(session: Session, event: EventContext, _sessions: Any) -> list[int]:
    """The account of the purchase a refund or dispute is about (the ledger takes from it)."""
    payment_intent = stripe_objects.object_id(
        stripe_objects.event_object(event).get("payment_intent")
    )
    if payment_intent is None:
        return []
    purchase = purchase_for_payment(session, payment_intent)
    return [purchase.account_id] if purchase is not None else []


def subscription_accounts(session: Session, event: EventContext, fetched: Any) -> list[int]:
    """The account a subscription event may link its customer to (the subscription's row
    itself belongs to its object, claimed by one batch at a time)."""
    obj = fetched if fetched is not None else stripe_objects.event_object(event)
    named = stripe_objects.named_account(obj)
    return [named] if named is not None else []


def checkout_accounts_many(
    session: Session, items: Sequence[tuple[EventContext, Any]]
) -> list[list[int]]:
    """Each checkout's account: the one it names, else its customer's (one read for every
    customer of the batch); none when neither is known."""
    named: list[int | None] = []
    customers: list[str | None] = []
    for event, _ in items:
        account, customer = _checkout_names(event)
        named.append(account)
        customers.append(customer if account is None else None)
    wanted = [customer for customer in customers if customer is not None]
    owners: dict[str | None, int] = {}
    if wanted:
        owned = _OWNERS.rows(session, customers=sorted(set(wanted)))
        owners = {customer: account for customer, account in owned}
    found: list[list[int]] = []
    for account, customer in zip(named, customers, strict=True):
        owner = owners.get(customer) if customer is not None else None
        found.append([account] if account is not None else [owner] if owner is not None else [])
    return found


def _checkout_names(event: EventContext) -> tuple[int | None, str | None]:
    """The account a checkout names and its customer; neither when it is malformed."""
    try:
        obj = stripe_objects.event_object(event)
        return stripe_objects.named_account(obj), stripe_objects.object_id(obj.get("customer"))
    except Exception:
        return None, None


def payment_accounts_many(
    session: Session, items: Sequence[tuple[EventContext, Any]]
) -> list[list[int]]:
    """Each refund's or dispute's account: its purchase's, for every payment of the batch
    in one read; none when no purchase is recorded for it."""
    payments = [_payment_intent(event) for event, _ in items]
    wanted = [payment for payment in payments if payment is not None]
    paid_by: dict[str | None, int] = {}
    if wanted:
        paid = _PURCHASE_ACCOUNTS.rows(session, payments=sorted(set(wanted)))
        paid_by = {payment: account for payment, account in paid}
    return [
        [paid_by[payment]] if payment is not None and payment in paid_by else []
        for payment in payments
    ]


def _payment_intent(event: EventContext) -> str | None:
    try:
        obj = stripe_objects.event_object(event)
    except Exception:
        return None
    return stripe_objects.object_id(obj.get("payment_intent"))


#: Core statements on the tables (not the mapped classes): plain values, without the
#: Python of an ORM select, for statements every batch of events runs.
_accounts: Table = Account.__table__  # type: ignore[assignment]
_purchases: Table = CreditPurchase.__table__  # type: ignore[assignment]


#: The account of each of the Stripe customers `customers` that has one.
_OWNERS = Query(
    lambda one_of: select(_accounts.c.stripe_customer_id, _accounts.c.id).where(
        one_of(_accounts.c.stripe_customer_id, "customers")
    )
)
#: The account of the purchase each of the payment intents `payments` made.
_PURCHASE_ACCOUNTS = Query(
    lambda one_of: select(_purchases.c.payment_intent_id, _purchases.c.account_id).where(
        one_of(_purchases.c.payment_intent_id, "payments")
    )
)
