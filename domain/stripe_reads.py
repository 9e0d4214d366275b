"""The Stripe API reads billing handlers make in `prepare`, outside any transaction.

Each read turns Stripe's answer into plain values and its failures into the handler
contract's two answers: RetryLater (network, rate limit, Stripe's 5xx, no API key yet),
PermanentFailure (Stripe says the object does not exist).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import stripe

from domain.clients import NotConfigured, stripe_client
from outbox.handling import PermanentFailure, RetryLater
from outbox.settings import Settings

LIST_PAGE = 100  #: objects per page of a Stripe list call (Stripe's maximum)

T = TypeVar("T")


def checkout_line_items(settings: Settings, session_id: str) -> list[dict[str, Any]]:
    """Every line item of a checkout session (`GET /v1/checkout/sessions/{id}/line_items`)."""

    def read(client: stripe.StripeClient) -> list[dict[str, Any]]:
        page = client.v1.checkout.sessions.line_items.list(session_id, {"limit": LIST_PAGE})
        return [item.to_dict() for item in page.auto_paging_iter()]

    return _call(settings, f"line items of checkout session {session_id}", read)


def checkout_sessions_for_payment(
    settings: Settings, payment_intent_id: str
) -> list[dict[str, Any]]:
    """The checkout sessions that created a payment intent (none for an invoice's payment)."""

    def read(client: stripe.StripeClient) -> list[dict[str, Any]]:
        page = client.v1.checkout.sessions.list(
            {"payment_intent": payment_intent_id, "limit": LIST_PAGE}
        )
        return [item.to_dict() for item in page.data]

    return _call(settings, f"checkout sessions of payment {payment_intent_id}", read)


def subscription(settings: Settings, subscription_id: str) -> dict[str, Any]:
    """The subscription as Stripe has it now (`GET /v1/subscriptions/{id}`)."""

    def read(client: stripe.StripeClient) -> dict[str, Any]:
        return client.v1.subscriptions.retrieve(subscription_id).to_dict()

    return _call(settings, f"subscription {subscription_id}", read)


def _call(settings: Settings, what: str, read: Callable[[stripe.StripeClient], T]) -> T:
    try:
        return read(stripe_client(settings))
    except NotConfigured as exc:
        raise RetryLater(f"cannot read the {what} from Stripe: {exc}") from None
    except stripe.InvalidRequestError as exc:
        if exc.http_status == 404:
            raise PermanentFailure(f"Stripe has no {what}: {exc.user_message or exc}") from None
        raise RetryLater(f"Stripe refused to read the {what}: {exc.user_message or exc}") from None
    except stripe.StripeError as exc:
        raise RetryLater(
            f"reading the {what} from Stripe failed: {exc.user_message or exc}"
        ) from None
