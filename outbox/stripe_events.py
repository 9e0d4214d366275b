"""A Stripe Event's JSON -> the row that stores it, wherever the event came from.

The ingress calls this for a verified webhook; `outbox reconcile stripe` calls it for an
event fetched from the API that never arrived. Both must record the same fields, so the
rule lives here once.
"""

from __future__ import annotations

import hashlib
from typing import Any

from outbox.fields import as_int64, as_text, as_time, dig
from outbox.models import Source, Status
from outbox.modes import mode_mismatch
from outbox.payload import UnreadablePayload, peek_body
from outbox.settings import StripeMode
from outbox.store import IncomingEvent, exact_delivery_id

#: Invoice events are ordered with the subscription they bill, so a renewal and a
#: cancellation of one subscription are never applied at the same time.
_ORDER_BY_SUBSCRIPTION = ("invoice.",)


def incoming_stripe_event(
    body: bytes,
    headers: dict[str, str],
    verified_by: str,
    mode: StripeMode,
    *,
    backfilled: bool = False,
) -> IncomingEvent:
    """The row for an authentic Stripe event; a body that is not an event is kept, marked dead.
    Raises DeliveryIdNotStorable for an event id the store cannot keep exactly.

    :param headers: the headers worth keeping, already chosen by the caller.
    :param verified_by: what vouches for it ("stripe#0": the first webhook secret).
    :param backfilled: fetched from the API by reconcile rather than delivered.
    """
    try:
        payload = peek_body(body)
        event_id = as_text(payload.get("id"))
        if event_id is None:
            raise UnreadablePayload("event has no 'id'")
    except UnreadablePayload as exc:
        # Without an event id the body's hash is its identity, so a retry of it is a duplicate.
        return IncomingEvent(
            source=Source.STRIPE,
            delivery_id="unreadable:" + hashlib.sha256(body).hexdigest(),
            event_type="unknown",
            raw_body=body,
            headers=headers,
            verified_by=verified_by,
            backfilled=backfilled,
            status=Status.DEAD,
            reason=f"unprocessable: {exc}",
        )
    exact_delivery_id(event_id)
    event_type = as_text(payload.get("type")) or "unknown"
    livemode = payload.get("livemode") if isinstance(payload.get("livemode"), bool) else None
    skip_reason = mode_mismatch(livemode, mode)
    return IncomingEvent(
        source=Source.STRIPE,
        delivery_id=event_id,
        event_type=event_type,
        raw_body=body,
        headers=headers,
        verified_by=verified_by,
        livemode=livemode,
        stripe_account=as_text(payload.get("account")),
        account_id=account_of(payload),
        object_id=object_of(event_type, payload),
        provider_created_at=as_time(payload.get("created")),
        api_version=as_text(payload.get("api_version")),
        backfilled=backfilled,
        status=Status.SKIPPED if skip_reason else Status.PENDING,
        reason=skip_reason,
    )


def account_of(payload: dict[str, Any]) -> int | None:
    obj = dig(payload, "data", "object")
    return as_int64(dig(obj, "client_reference_id")) or as_int64(
        dig(obj, "metadata", "github_account_id")
    )


def object_of(event_type: str, payload: dict[str, Any]) -> str | None:
    obj = dig(payload, "data", "object")
    if event_type.startswith(_ORDER_BY_SUBSCRIPTION):
        # `subscription`, or since API version 2025-03 `parent.subscription_details.subscription`.
        for subscription in (
            dig(obj, "subscription"),
            dig(obj, "parent", "subscription_details", "subscription"),
        ):
            if isinstance(subscription, dict):
                subscription = subscription.get("id")
            if as_text(subscription):
                return str(subscription)
    return as_text(dig(obj, "id"))
