"""POST /webhooks/stripe: events built around the corpus objects are verified and stored once."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from ingress.app import create_app
from outbox.models import Status, WebhookEvent
from tests.conftest import CORPUS
from tests.factories import stripe_event_body, stripe_headers

OBJECTS = {
    "checkout.session.json": "checkout.session.completed",
    "subscription.json": "customer.subscription.updated",
    "invoice.json": "invoice.paid",
    "customer.json": "customer.created",
    "payment_intent.json": "payment_intent.succeeded",
    "billing.meter_event.json": "billing.meter_event.created",
    "event.json": None,  # already an event: sent as it is
}


def _stored(engine) -> list[WebhookEvent]:
    with Session(engine) as session:
        return list(session.scalars(select(WebhookEvent).order_by(WebhookEvent.id)))


@pytest.mark.parametrize("name", sorted(OBJECTS))
def test_event_around_each_corpus_object_is_stored_with_its_metadata(
    client, engine, handler_table, name
):
    raw = (CORPUS / "stripe/objects" / name).read_bytes()
    obj = json.loads(raw)
    if OBJECTS[name] is None:
        body, event = raw, obj
    else:
        body = stripe_event_body(obj, OBJECTS[name], created=1721948530, account="acct_123")
        event = json.loads(body)
    response = client.post("/webhooks/stripe", content=body, headers=stripe_headers(body))
    assert response.status_code == 200, response.text
    [row] = _stored(engine)
    assert row.raw_body == body
    assert (row.delivery_id, row.event_type) == (event["id"], event["type"])
    assert row.livemode is False
    assert row.stripe_account == event.get("account")
    assert row.api_version == event.get("api_version")
    assert row.provider_created_at == datetime.fromtimestamp(event["created"], UTC)
    obj = event["data"]["object"]
    expected_object = obj.get("id")
    if event["type"].startswith("invoice."):  # ordered with the subscription it bills
        parent = (obj.get("parent") or {}).get("subscription_details") or {}
        expected_object = obj.get("subscription") or parent.get("subscription") or expected_object
    assert row.object_id == expected_object
    # Pending for a handler to apply, else stored finished (ingress/stored_only.py).
    if ("stripe", row.event_type) in handler_table:
        assert (row.status, row.last_error) == (Status.PENDING, None)
    else:
        assert row.status == Status.SKIPPED
        assert row.last_error == f"no handler for stripe {row.event_type}"


def test_event_of_the_other_mode_is_stored_but_never_applied(settings, engine):
    settings = settings.model_copy(update={"stripe_mode": "live"})
    body = stripe_event_body({"id": "cus_1", "object": "customer"}, "customer.created")
    with TestClient(create_app(settings, engine=engine)) as client:
        response = client.post("/webhooks/stripe", content=body, headers=stripe_headers(body))
    assert response.status_code == 200
    [row] = _stored(engine)
    assert row.status == Status.SKIPPED
    assert row.last_error == "test-mode event; STRIPE_MODE=live"
    assert row.next_attempt_at is None


def test_stale_and_future_timestamps_are_refused(client, engine):
    body = stripe_event_body({"id": "cus_1"}, "customer.created")
    for at in (int(time.time()) - 301, int(time.time()) + 400):
        response = client.post(
            "/webhooks/stripe", content=body, headers=stripe_headers(body, at=at)
        )
        assert response.status_code == 401
        assert "tolerance" in response.json()["error"]
    assert _stored(engine) == []


def test_tolerance_is_configurable(settings, engine):
    settings = settings.model_copy(update={"stripe_webhook_tolerance": 3600})
    body = stripe_event_body({"id": "cus_1"}, "customer.created")
    headers = stripe_headers(body, at=int(time.time()) - 1800)
    with TestClient(create_app(settings, engine=engine)) as client:
        assert client.post("/webhooks/stripe", content=body, headers=headers).status_code == 200


def test_rotated_secrets_are_all_accepted(settings, engine):
    settings = settings.model_copy(update={"stripe_webhook_secret": "whsec_old, whsec_new"})
    with TestClient(create_app(settings, engine=engine)) as client:
        for n, secret in enumerate(("whsec_old", "whsec_new")):
            body = stripe_event_body({"id": f"cus_{n}"}, "customer.created")
            response = client.post(
                "/webhooks/stripe", content=body, headers=stripe_headers(body, secret)
            )
            assert response.status_code == 200
    assert [r.verified_by for r in _stored(engine)] == ["stripe#0", "stripe#1"]


def test_signed_body_without_event_id_is_kept_and_its_repeat_is_a_duplicate(client, engine):
    body = b'["not", "an", "event"]'
    first = client.post("/webhooks/stripe", content=body, headers=stripe_headers(body)).json()
    again = client.post("/webhooks/stripe", content=body, headers=stripe_headers(body)).json()
    assert again == {"id": first["id"], "duplicate": True}
    [row] = _stored(engine)
    assert row.status == Status.DEAD and row.last_error.startswith("unprocessable:")
