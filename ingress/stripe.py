"""Stripe webhooks: from a verified request to the row that stores it.

Reading the event itself is shared with `outbox reconcile stripe` (outbox/stripe_events.py);
what is the ingress's own is which request headers are worth keeping.
"""

from __future__ import annotations

from collections.abc import Mapping

from ingress.errors import IdNotStorable
from outbox.settings import StripeMode
from outbox.store import DeliveryIdNotStorable, IncomingEvent
from outbox.stripe_events import incoming_stripe_event

KEPT_HEADERS = ("content-type", "user-agent", "stripe-signature")


def stripe_event(
    body: bytes, headers: Mapping[str, str], verified_by: str, mode: StripeMode
) -> IncomingEvent:
    """The row for a verified Stripe delivery; a body that is not an event is kept, marked dead."""
    kept = {name: headers[name] for name in KEPT_HEADERS if name in headers}
    try:
        return incoming_stripe_event(body, kept, verified_by, mode)
    except DeliveryIdNotStorable as exc:
        raise IdNotStorable(f"event id cannot be stored exactly: {exc}") from None
