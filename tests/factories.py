"""Small builders for test rows and signed requests."""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from ingress.signatures import github_signature, stripe_signature
from outbox import store
from outbox.db import utcnow
from outbox.models import Source
from outbox.store import IncomingEvent, Recorded
from tests.conftest import GITHUB_SECRET, STRIPE_SECRET


def incoming(
    delivery_id: str | None = None,
    *,
    source: str = Source.STRIPE,
    event_type: str = "test.event",
    object_id: str | None = None,
    account_id: int | None = None,
    created: datetime | None = None,
    body: dict[str, Any] | None = None,
) -> IncomingEvent:
    delivery_id = delivery_id or f"evt_{uuid.uuid4().hex}"
    raw = json.dumps(body or {"id": delivery_id, "type": event_type}).encode()
    return IncomingEvent(
        source=source,
        delivery_id=delivery_id,
        event_type=event_type,
        raw_body=raw,
        headers={"content-type": "application/json"},
        verified_by=f"{source}#0",
        object_id=object_id,
        account_id=account_id,
        provider_created_at=created,
    )


def record(engine: Engine, *items: IncomingEvent, now: datetime | None = None) -> list[Recorded]:
    with engine.begin() as conn:
        return store.record(conn, list(items), now or utcnow())


def github_headers(
    body: bytes, event: str, delivery: str | None = None, secret: str = GITHUB_SECRET,
    content_type: str = "application/json",
) -> dict[str, str]:  # fmt: skip
    return {
        "X-Hub-Signature-256": github_signature(secret, body),
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-GitHub-Hook-ID": "123456",
        "Content-Type": content_type,
    }


def stripe_headers(
    body: bytes, secret: str = STRIPE_SECRET, at: int | None = None
) -> dict[str, str]:
    return {
        "Stripe-Signature": stripe_signature(secret, body, at or int(time.time())),
        "Content-Type": "application/json; charset=utf-8",
    }


def stripe_event_body(
    obj: dict[str, Any], event_type: str, *, event_id: str | None = None,
    created: int | None = None, livemode: bool = False, account: str | None = None,
) -> bytes:  # fmt: skip
    """A Stripe Event envelope around `obj`, as Stripe would deliver it."""
    event: dict[str, Any] = {
        "id": event_id or f"evt_{uuid.uuid4().hex[:24]}",
        "object": "event",
        "api_version": "2024-06-20",
        "created": created or int(time.time()),
        "data": {"object": obj},
        "livemode": livemode,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
    }
    if account:
        event["account"] = account
    return json.dumps(event, separators=(",", ":")).encode()
