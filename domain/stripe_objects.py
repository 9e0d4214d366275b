"""Reading the Stripe objects billing acts on: checkout sessions, charges, subscriptions,
invoices. A field billing needs that is missing or of the wrong type is a PermanentFailure
naming it (the event can never be applied as it is); optional fields read as None.

Which account an object names: `client_reference_id` (checkout sessions), else
`metadata.github_account_id` (checkout sessions, subscriptions; for invoices the
subscription's metadata copied onto the invoice). Either must be the numeric GitHub id.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from domain.disputes import Dispute
from domain.purchases import LineItem, Refund
from domain.subscriptions import SubscriptionState
from outbox.handling import EventContext, PermanentFailure, as_int64

#: Metadata key naming the account (the GitHub user or organisation id).
ACCOUNT_KEY = "github_account_id"
#: Metadata key of a checkout session naming the pack it sells (a catalog price id).
PACK_KEY = "credit_pack"


def event_object(event: EventContext) -> dict[str, Any]:
    obj = _get(event.payload, "data", "object")
    if not isinstance(obj, dict):
        raise PermanentFailure(f"{event.event_type} event has no data.object")
    return obj


def event_time(event: EventContext) -> datetime:
    """Stripe's `created` of the event: what orders news about one object."""
    if event.provider_created_at is not None:
        return event.provider_created_at
    created = event.payload.get("created")
    if isinstance(created, int) and not isinstance(created, bool):
        return datetime.fromtimestamp(created, UTC)
    raise PermanentFailure(f"{event.event_type} event has no 'created' time")


def required_text(obj: dict[str, Any], *path: str) -> str:
    value = _get(obj, *path)
    if not isinstance(value, str) or not value:
        raise PermanentFailure(f"{obj.get('object', 'object')} has no {'.'.join(path)}")
    return value


def optional_text(obj: dict[str, Any], *path: str) -> str | None:
    value = _get(obj, *path)
    return value if isinstance(value, str) and value else None


def object_id(value: Any) -> str | None:
    """An id field that may be expanded ({"id": …}) or not ("cus_…")."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def required_amount(obj: dict[str, Any], field: str) -> int:
    value = obj.get(field)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise PermanentFailure(f"{obj.get('object', 'object')} has no valid {field}")
    return value


def named_account(obj: dict[str, Any], *metadata_paths: tuple[str, ...]) -> int | None:
    """The account id an object names (see the module doc); PermanentFailure if not numeric."""
    candidates = [("client_reference_id",), ("metadata", ACCOUNT_KEY), *metadata_paths]
    for path in candidates:
        value = _get(obj, *path)
        if value is None or value == "":
            continue
        # ASCII digits within 64 bits, read as the ingress reads them (outbox.fields).
        account = as_int64(value.strip() if isinstance(value, str) else value)
        if account is None or account < 0:
            shown = repr(value[:80]) if isinstance(value, str) else type(value).__name__
            raise PermanentFailure(f"{'.'.join(path)} {shown} is not a GitHub account id")
        return account
    return None


def checkout_lines(obj: dict[str, Any]) -> tuple[LineItem, ...] | None:
    """The packs a checkout session names itself: its metadata, else its line items if the
    event carries them; None when neither is there (they must be fetched)."""
    pack = optional_text(obj, "metadata", PACK_KEY)
    if pack is not None:
        return (LineItem(pack, 1),)
    items = _get(obj, "line_items", "data")
    if not isinstance(items, list) or _get(obj, "line_items", "has_more"):
        return None
    return line_items(items)


def line_items(items: list[Any]) -> tuple[LineItem, ...]:
    lines = []
    for item in items:
        price = object_id(_get(item, "price"))
        quantity = _get(item, "quantity")
        if price is None:
            raise PermanentFailure("a checkout line item has no price id")
        if quantity is None:
            quantity = 1
        if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity < 1:
            raise PermanentFailure(f"checkout line item of {price} has quantity {quantity!r}")
        lines.append(LineItem(price, quantity))
    return tuple(lines)


def refund_of(charge: dict[str, Any]) -> Refund:
    payment_intent = object_id(charge.get("payment_intent"))
    if payment_intent is None:
        raise PermanentFailure("charge has no payment_intent")
    return Refund(
        charge_id=required_text(charge, "id"),
        payment_intent_id=payment_intent,
        amount=required_amount(charge, "amount"),
        amount_refunded=required_amount(charge, "amount_refunded"),
    )


#: Characters a dispute's id and status may have (their columns' widths).
_DISPUTE_ID_CAP, _DISPUTE_STATUS_CAP = 255, 32


def dispute_of(obj: dict[str, Any], *, closed: bool) -> Dispute | None:
    """A dispute object as the ledger needs it; None when its charge was no Checkout payment
    (no payment intent: no pack was bought with it)."""
    payment_intent = object_id(obj.get("payment_intent"))
    if payment_intent is None:
        return None
    dispute_id = required_text(obj, "id")
    status = required_text(obj, "status")
    if len(dispute_id) > _DISPUTE_ID_CAP or len(status) > _DISPUTE_STATUS_CAP:
        raise PermanentFailure("dispute has an id or status longer than any Stripe sends")
    return Dispute(
        dispute_id=dispute_id,
        payment_intent_id=payment_intent,
        amount=required_amount(obj, "amount"),
        status=status,
        closed=closed,
    )


def subscription_state(obj: dict[str, Any]) -> SubscriptionState:
    """A subscription object's state. The period end is on the object in older API
    versions and on its items in newer ones (2025-03 on): either is read."""
    items = _get(obj, "items", "data")
    items = items if isinstance(items, list) else []
    first = items[0] if items and isinstance(items[0], dict) else {}
    period_ends = [
        end
        for end in [obj.get("current_period_end")]
        + [item.get("current_period_end") for item in items if isinstance(item, dict)]
        if isinstance(end, int) and not isinstance(end, bool)
    ]
    return SubscriptionState(
        subscription_id=required_text(obj, "id"),
        status=required_text(obj, "status"),
        stripe_customer_id=object_id(obj.get("customer")),
        price_id=object_id(first.get("price")) or object_id(_get(obj, "plan")),
        current_period_end=datetime.fromtimestamp(max(period_ends), UTC) if period_ends else None,
        cancel_at_period_end=obj.get("cancel_at_period_end") is True,
    )


def invoice_subscription(invoice: dict[str, Any]) -> str | None:
    """The subscription an invoice bills (`subscription`, or since 2025-03
    `parent.subscription_details.subscription`); None for a one-off invoice."""
    return object_id(invoice.get("subscription")) or object_id(
        _get(invoice, "parent", "subscription_details", "subscription")
    )


#: Where an invoice carries its subscription's metadata (newer, then older API versions).
INVOICE_ACCOUNT_PATHS = (
    ("parent", "subscription_details", "metadata", ACCOUNT_KEY),
    ("subscription_details", "metadata", ACCOUNT_KEY),
)


def _get(document: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(document, dict):
            return None
        document = document.get(key)
    return document
