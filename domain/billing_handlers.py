"""Stripe events billing applies, as entries of the domain's dispatch table.

checkout.session.completed (paid) and checkout.session.async_payment_succeeded -> grant_pack
charge.refunded                                                   -> take_back_refund
charge.dispute.created / .funds_withdrawn / .closed               -> apply_dispute
customer.subscription.created / .updated / .deleted               -> apply_subscription_event
invoice.paid / invoice.payment_failed                             -> apply_subscription_event

`prepare` reads Stripe (line items, the current subscription) outside the transaction;
`apply` writes only. An event naming an account that does not exist yet is RetryLater (kept
and retried, never dropped); one that can never apply (unknown pack, malformed) is
PermanentFailure, dead and replayable once an operator has fixed the cause.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session

from domain import (
    account_locks,
    billing_accounts,
    disputes,
    purchases,
    stripe_objects,
    stripe_reads,
)
from domain.accounts import (
    Account,
    CustomerAlreadyLinked,
    account_for_customer,
    link_customer,
    link_customers,
)
from domain.purchases import Checkout, LineItem, UnknownPack
from domain.subscription_events import apply_subscription_event, apply_subscription_events
from outbox.handling import (
    EventContext,
    Failed,
    Handler,
    HandlerTable,
    LeftToApply,
    ManyResult,
    NoEffect,
    PermanentFailure,
    RetryLater,
    apply_one,
)
from outbox.settings import Settings

log = logging.getLogger(__name__)

PAID = "paid"
ASYNC_SUCCEEDED = "checkout.session.async_payment_succeeded"
DISPUTE_CLOSED = "charge.dispute.closed"


def billing_handlers(settings: Settings) -> HandlerTable:
    """Billing's entries of the dispatch table, configured from `settings`."""
    fetch = settings.stripe_api_key is not None
    lock = account_locks.try_lock_accounts
    grant = Handler(
        "grant_pack",
        apply=apply_checkout,
        prepare=_checkout_reader(settings),
        apply_many=apply_checkouts,
        accounts=billing_accounts.checkout_accounts,
        accounts_many=billing_accounts.checkout_accounts_many,
        lock_accounts=lock,
    )
    refund = Handler(
        "take_back_refund",
        apply=apply_refund,
        prepare=_refund_reader(settings) if fetch else None,
        apply_many=apply_refunds,
        accounts=billing_accounts.payment_accounts,
        accounts_many=billing_accounts.payment_accounts_many,
        lock_accounts=lock,
    )
    dispute = Handler(
        "apply_dispute",
        apply=apply_dispute,
        prepare=_refund_reader(settings) if fetch else None,  # a dispute names its payment too
        accounts=billing_accounts.payment_accounts,
        accounts_many=billing_accounts.payment_accounts_many,
        lock_accounts=lock,
    )
    sub = Handler(
        "apply_subscription",
        apply=apply_subscription_event,
        apply_many=apply_subscription_events,
        prepare=_subscription_reader(settings) if fetch else None,
        accounts=billing_accounts.subscription_accounts,
        lock_accounts=lock,
    )
    invoice = Handler(
        "apply_invoice",
        apply=apply_subscription_event,
        apply_many=apply_subscription_events,
        prepare=_subscription_reader(settings) if fetch else None,
        # Only a subscription object may link its customer (domain/subscription_events.py).
        accounts=billing_accounts.subscription_accounts if fetch else None,
        lock_accounts=lock if fetch else None,
    )
    return {
        ("stripe", "checkout.session.completed"): grant,
        ("stripe", ASYNC_SUCCEEDED): grant,
        ("stripe", "charge.refunded"): refund,
        ("stripe", "charge.dispute.created"): dispute,
        ("stripe", "charge.dispute.funds_withdrawn"): dispute,
        ("stripe", DISPUTE_CLOSED): dispute,
        ("stripe", "customer.subscription.created"): sub,
        ("stripe", "customer.subscription.updated"): sub,
        ("stripe", "customer.subscription.deleted"): sub,
        ("stripe", "invoice.paid"): invoice,
        ("stripe", "invoice.payment_failed"): invoice,
    }


def past_due_grace(settings: Settings) -> timedelta:
    return timedelta(days=settings.past_due_grace_days)


# --- checkout: grant a pack once per session ------------------------------------------


def _is_paid_pack_purchase(event: EventContext, obj: dict[str, Any]) -> bool:
    paid = event.event_type == ASYNC_SUCCEEDED or obj.get("payment_status") == PAID
    return paid and obj.get("mode", "payment") == "payment"


def _checkout_reader(settings: Settings) -> Any:
    def prepare(event: EventContext) -> tuple[LineItem, ...] | None:
        """The session's line items from Stripe, when the event names no pack itself."""
        obj = stripe_objects.event_object(event)
        if not _is_paid_pack_purchase(event, obj) or stripe_objects.checkout_lines(obj):
            return None
        session_id = stripe_objects.required_text(obj, "id")
        return stripe_objects.line_items(stripe_reads.checkout_line_items(settings, session_id))

    return prepare


def apply_checkout(session: Session, event: EventContext, fetched: Any) -> NoEffect | None:
    obj = stripe_objects.event_object(event)
    session_id = stripe_objects.required_text(obj, "id")
    customer = stripe_objects.object_id(obj.get("customer"))
    if not _is_paid_pack_purchase(event, obj):
        # Not (yet) paid, or a subscription's checkout: nothing to grant, but a session
        # that names both an existing account and its customer still links them.
        account_id = stripe_objects.named_account(obj)
        if account_id is not None and session.get(Account, account_id) is not None:
            _link(session, account_id, customer, event)
        return NoEffect(_why_no_grant(obj))
    account_id = _checkout_account(session, obj, customer)
    _link(session, account_id, customer, event)
    if purchases.purchase_for_session(session, session_id) is not None:
        return NoEffect(f"checkout session {session_id} was granted already")
    lines = stripe_objects.checkout_lines(obj) or fetched
    if not lines:
        raise RetryLater(f"line items of checkout session {session_id} were not read yet")
    checkout = _checkout(obj, account_id, lines)
    try:
        purchases.grant_pack(session, checkout, now=event.now, event_id=event.id)
    except UnknownPack as exc:
        raise _unknown_pack(session_id, exc) from None
    return None


def _why_no_grant(obj: dict[str, Any]) -> str:
    """Why a completed checkout grants no pack, in the operator's words."""
    mode = obj.get("mode", "payment")
    if mode != "payment":
        return f"a checkout in {mode} mode: its subscription's events apply it, not a pack"
    return (
        f"checkout not paid (payment_status {obj.get('payment_status')!r}): "
        "credits come with checkout.session.async_payment_succeeded"
    )


def _checkout(obj: dict[str, Any], account_id: int, lines: Any) -> Checkout:
    amount_total = obj.get("amount_total")
    return Checkout(
        session_id=stripe_objects.required_text(obj, "id"),
        account_id=account_id,
        lines=tuple(lines),
        payment_intent_id=stripe_objects.object_id(obj.get("payment_intent")),
        stripe_customer_id=stripe_objects.object_id(obj.get("customer")),
        amount_total=amount_total if isinstance(amount_total, int) else None,
        currency=stripe_objects.optional_text(obj, "currency"),
    )


def _unknown_pack(session_id: str, exc: UnknownPack) -> PermanentFailure:
    return PermanentFailure(
        f"checkout session {session_id}: {exc}; add it with `outbox packs set` and replay"
    )


def apply_checkouts(
    session: Session, items: Sequence[tuple[EventContext, Any]]
) -> list[ManyResult]:
    """`apply_checkout` for many events in one go (the processors' batches).

    Every paid pack purchase that names its account (`client_reference_id` or metadata),
    with its packs in metadata or in the line items the event carries or `prepare` read
    (several packs, quantities), is granted with the others in a few statements
    (purchases.grant_packs), every account locked in one statement first, and its Stripe
    customer linked in one more (accounts.link_customers). Any other event (not paid, an
    account found only through its customer) is left to `apply_checkout` (LeftToApply).
    One result per event: None, LeftToApply, or why it failed. An event that fails writes
    nothing (its customer is not linked either), exactly as `apply_checkout` in a
    transaction of its own, which is rolled back.
    """
    results: list[ManyResult] = [None] * len(items)
    grants: list[tuple[int, EventContext, purchases.PackGrant]] = []
    for index, (event, fetched) in enumerate(items):
        try:
            grant = _plain_grant(event, fetched)
        except PermanentFailure as exc:
            results[index] = Failed(exc)
            continue
        if grant is None:
            results[index] = LeftToApply()
        else:
            grants.append((index, event, grant))
    if not grants:
        return results
    accounts = account_locks.lock_accounts(session, (g.checkout.account_id for _, _, g in grants))
    ready = []
    for index, event, grant in grants:
        if grant.checkout.account_id not in accounts:
            results[index] = Failed(_no_account(grant.checkout.account_id))
            continue
        ready.append((index, event, grant))
    if not ready:
        return results
    now = max(event.now for _, event, _ in ready)  # the batch's attempt time
    granted = purchases.grant_packs(session, [grant for _, _, grant in ready], now=now)
    links = []
    for (index, _, grant), outcome in zip(ready, granted, strict=True):
        if isinstance(outcome, UnknownPack):
            results[index] = Failed(_unknown_pack(grant.checkout.session_id, outcome))
        elif isinstance(outcome, Exception):
            results[index] = Failed(RetryLater(str(outcome)))
        elif grant.checkout.stripe_customer_id is not None:
            # Linked only once granted: a row that fails writes nothing, as alone.
            links.append((grant.checkout.account_id, grant.checkout.stripe_customer_id))
    # An account that had a customer when locked keeps it (an earlier link stands): most
    # batches then send no link at all.
    held = account_locks.held_customers(session, (account for account, _ in links))
    link_customers(session, links, now=now, held=held)
    return results


def _plain_grant(event: EventContext, fetched: Any) -> purchases.PackGrant | None:
    """The grant of a paid purchase that names its account and packs; None for any other."""
    obj = stripe_objects.event_object(event)
    if not _is_paid_pack_purchase(event, obj):
        return None
    account_id = stripe_objects.named_account(obj)
    lines = stripe_objects.checkout_lines(obj) or fetched
    if account_id is None or not lines:
        return None
    return purchases.PackGrant(_checkout(obj, account_id, lines), event.id)


def _checkout_account(session: Session, obj: dict[str, Any], customer: str | None) -> int:
    account_id = stripe_objects.named_account(obj)
    if account_id is not None:
        return _existing(session, account_id)
    if customer is not None:
        owner = account_for_customer(session, customer)
        if owner is not None:
            return owner.id
        raise RetryLater(
            f"checkout session names no account and Stripe customer {customer} is linked to "
            "none yet (`outbox accounts link`)"
        )
    raise PermanentFailure(
        "checkout session names no account: set client_reference_id or "
        f"metadata.{stripe_objects.ACCOUNT_KEY} to the GitHub account id"
    )


def _existing(session: Session, account_id: int) -> int:
    if session.get(Account, account_id) is None:
        raise _no_account(account_id)
    return account_id


def _no_account(account_id: int) -> RetryLater:
    return RetryLater(f"account {account_id} does not exist yet")


def _link(session: Session, account_id: int, customer: str | None, event: EventContext) -> None:
    """Link the customer an event names to its account, unless either is linked elsewhere
    (an operator's link or an earlier one stands; the event is still applied)."""
    if customer is None:
        return
    try:
        link_customer(session, account_id, customer, now=event.now)
    except CustomerAlreadyLinked as exc:
        log.info("not linking from event %s: %s", event.delivery_id, exc)


# --- refunds: take back the refunded share once ---------------------------------------


def _refund_reader(settings: Settings) -> Any:
    def prepare(event: EventContext) -> list[dict[str, Any]] | None:
        """The checkout sessions behind the charge's payment: none means it bought no pack."""
        charge = stripe_objects.event_object(event)
        payment_intent = stripe_objects.object_id(charge.get("payment_intent"))
        if payment_intent is None:
            return None
        return stripe_reads.checkout_sessions_for_payment(settings, payment_intent)

    return prepare


def apply_refund(session: Session, event: EventContext, sessions: Any) -> NoEffect | None:
    """One `charge.refunded`: `apply_refunds` with one item."""
    return apply_one(apply_refunds, session, event, sessions)


def apply_refunds(
    session: Session, items: Sequence[tuple[EventContext, Any]]
) -> list[Failed | NoEffect | None]:
    """`charge.refunded` events together (with the checkout sessions `prepare` read, or
    None), in the events' order: their purchases read in one statement, the refund states
    taken in by domain/purchases.py's rule, the ledger entries written in a few statements.
    One result per event: None (applied), NoEffect (no pack was bought with the charge), or
    why it failed (malformed: PermanentFailure; its purchase not recorded yet: RetryLater),
    writing nothing."""
    results: list[Failed | NoEffect | None] = [None] * len(items)
    read: list[tuple[int, EventContext, Any, dict[str, Any], purchases.Refund]] = []
    for index, (event, sessions) in enumerate(items):
        try:
            charge = stripe_objects.event_object(event)
            if stripe_objects.object_id(charge.get("payment_intent")) is None:
                results[index] = NoEffect(NOT_A_PACK_PAYMENT)
                continue
            read.append((index, event, sessions, charge, stripe_objects.refund_of(charge)))
        except Exception as exc:  # PermanentFailure: a malformed event
            results[index] = Failed(exc)
    if not read:
        return results
    paid_by = purchases.purchases_for_payments(session, (r.payment_intent_id for *_, r in read))
    # Read while the batch held their accounts (it locks them first): read under the locks.
    read_locked = account_locks.holds_all(session, (p.account_id for p in paid_by.values()))
    states: list[purchases.RefundState] = []
    for index, event, sessions, charge, refund in sorted(read, key=lambda item: item[1].id):
        purchase = paid_by.get(refund.payment_intent_id)
        if purchase is not None:
            states.append(purchases.RefundState(purchase, refund, event.id))
        elif _not_a_pack_payment(charge, sessions):
            results[index] = NoEffect(NOT_A_PACK_PAYMENT)
        else:
            results[index] = Failed(_purchase_not_recorded(refund.payment_intent_id))
    purchases.take_back_refunds(
        session, states, now=max(event.now for _, event, *_ in read), read_locked=read_locked
    )
    return results


NOT_A_PACK_PAYMENT = "not a payment for a credit pack: no credits to take back"


def _purchase_paid_by(
    session: Session, obj: dict[str, Any], payment_intent_id: str, sessions: Any
) -> purchases.CreditPurchase | None:
    """The pack purchase a charge or dispute is about; None when its payment bought no pack;
    RetryLater while the purchase it may be about is not recorded yet."""
    purchase = purchases.purchase_for_payment(session, payment_intent_id)
    if purchase is None and not _not_a_pack_payment(obj, sessions):
        raise _purchase_not_recorded(payment_intent_id)
    return purchase


def _purchase_not_recorded(payment_intent_id: str) -> RetryLater:
    return RetryLater(f"no credit purchase recorded yet for payment {payment_intent_id}")


# --- disputes: taken back while the funds are withdrawn, given back if won ---------------


def apply_dispute(session: Session, event: EventContext, sessions: Any) -> NoEffect | None:
    """See domain/disputes.py for the rules (Stripe's dispute statuses and their order)."""
    obj = stripe_objects.event_object(event)
    dispute = stripe_objects.dispute_of(obj, closed=event.event_type == DISPUTE_CLOSED)
    if dispute is None:
        return NoEffect(NOT_A_PACK_PAYMENT)
    purchase = _purchase_paid_by(session, obj, dispute.payment_intent_id, sessions)
    if purchase is None:
        return NoEffect(NOT_A_PACK_PAYMENT)
    disputes.apply_dispute(session, purchase, dispute, now=event.now, event_id=event.id)
    return None


def _not_a_pack_payment(charge: dict[str, Any], sessions: list[dict[str, Any]] | None) -> bool:
    if stripe_objects.object_id(charge.get("invoice")) is not None:
        return True  # a subscription's invoice payment
    if sessions is None:
        return False  # unknown without the Stripe API: wait for the purchase
    return not any(s.get("mode", "payment") == "payment" for s in sessions)


# --- subscriptions: the newest news per subscription ----------------------------------


def _subscription_reader(settings: Settings) -> Any:
    def prepare(event: EventContext) -> dict[str, Any] | None:
        """The subscription as Stripe has it now, rather than the event's possibly old copy."""
        obj = stripe_objects.event_object(event)
        if event.event_type.startswith("invoice."):
            subscription_id = stripe_objects.invoice_subscription(obj)
            if subscription_id is None:
                return None
        else:
            subscription_id = stripe_objects.required_text(obj, "id")
        return stripe_reads.subscription(settings, subscription_id)

    return prepare
