"""Stripe webhooks: from a request to the row that stores it (`event_reader`).

Reading the event itself is shared with `outbox reconcile stripe` (outbox/stripe_events.py);
what is the route's own is checking the signature and its timestamp, and which request
headers are worth keeping.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from ingress.errors import IdNotStorable, NotConfigured
from ingress.signatures import verify_stripe
from outbox.settings import StripeMode
from outbox.store import DeliveryIdNotStorable, IncomingEvent
from outbox.stripe_events import incoming_stripe_event

KEPT_HEADERS = ("content-type", "user-agent", "stripe-signature")


def event_reader(
    secrets: Sequence[str], tolerance: int, mode: StripeMode, clock: Callable[[], float]
) -> Callable[[bytes, dict[str, str]], IncomingEvent]:
    """The Stripe route's reading of a request whose body is whole: its signature checked
    against `secrets` (STRIPE_WEBHOOK_SECRET's, several while one is rotated) with its
    timestamp within `tolerance` seconds of `clock()`, then the row (an event of the
    Stripe mode not applied here stored skipped). Raises the Rejection to answer."""

    def read(body: bytes, headers: dict[str, str]) -> IncomingEvent:
        if not secrets:
            raise NotConfigured("STRIPE_WEBHOOK_SECRET is not set")
        signature = headers.get("stripe-signature")
        index = verify_stripe(body, signature, secrets, tolerance=tolerance, now=clock())
        return stripe_event(body, headers, f"stripe#{index}", mode)

    return read


def stripe_event(
    body: bytes, headers: Mapping[str, str], verified_by: str, mode: StripeMode
) -> IncomingEvent:
    """The row for a verified Stripe delivery; a body that is not an event is kept, marked dead."""
    kept = {name: headers[name] for name in KEPT_HEADERS if name in headers}
    try:
        return incoming_stripe_event(body, kept, verified_by, mode)
    except DeliveryIdNotStorable as exc:
        raise IdNotStorable(f"event id cannot be stored exactly: {exc}") from None
