"""Deliveries no handler applies are stored finished by the ingress, never rung."""

from __future__ import annotations

import json
import logging

from sqlalchemy import select
from starlette.testclient import TestClient

from ingress.app import create_app
from outbox.models import Status, WebhookEvent
from tests.conftest import CORPUS
from tests.factories import github_headers, stripe_event_body, stripe_headers

PUSH = (CORPUS / "github/push/payload.json").read_bytes()
INSTALLED = (CORPUS / "github/installation/created.payload.json").read_bytes()


def _rows(engine) -> dict[str, tuple[str, str | None, bool]]:
    """delivery id -> (status, last_error, processed)."""
    query = select(
        WebhookEvent.delivery_id,
        WebhookEvent.status,
        WebhookEvent.last_error,
        WebhookEvent.processed_at,
    )
    with engine.connect() as conn:
        return {d: (s, e, p is not None) for d, s, e, p in conn.execute(query)}


def test_a_delivery_no_handler_applies_is_stored_skipped_and_never_rung(client, engine, doorbell):
    pushed = client.post(
        "/webhooks/github", content=PUSH, headers=github_headers(PUSH, "push", delivery="p")
    ).json()
    headers = github_headers(INSTALLED, "installation", delivery="i")
    installed = client.post("/webhooks/github", content=INSTALLED, headers=headers).json()
    body = stripe_event_body({"id": "pi_1", "object": "payment_intent"}, "payment_intent.created")
    paid = client.post("/webhooks/stripe", content=body, headers=stripe_headers(body)).json()

    assert _rows(engine) == {
        "p": (Status.SKIPPED, "no handler for github push", True),
        "i": (Status.PENDING, None, False),
        paid_id(body): (Status.SKIPPED, "no handler for stripe payment_intent.created", True),
    }
    assert not pushed["duplicate"] and not paid["duplicate"]
    assert doorbell.rung_ids() == {installed["id"]}


def test_a_redelivery_of_a_stored_only_delivery_is_a_duplicate(client, engine):
    headers = github_headers(PUSH, "push", delivery="twice")
    first = client.post("/webhooks/github", content=PUSH, headers=headers).json()
    again = client.post("/webhooks/github", content=PUSH, headers=headers).json()
    assert again == {"id": first["id"], "duplicate": True}
    assert _rows(engine) == {"twice": (Status.SKIPPED, "no handler for github push", True)}


def test_a_handler_table_that_cannot_be_built_leaves_every_delivery_pending(
    settings, engine, caplog
):
    caplog.set_level(logging.ERROR, logger="outbox.ingress")
    settings = settings.model_copy(update={"handler_table": "tests.nowhere:handler_table"})
    with TestClient(create_app(settings, engine=engine)) as client:
        headers = github_headers(PUSH, "push", delivery="kept")
        assert client.post("/webhooks/github", content=PUSH, headers=headers).status_code == 200
    assert _rows(engine) == {"kept": (Status.PENDING, None, False)}
    [logged] = [r for r in caplog.records if r.getMessage().startswith("handler table not built")]
    assert "HANDLER_TABLE=tests.nowhere:handler_table" in logged.error


def test_a_type_carrying_a_lone_surrogate_is_stored_skipped_with_a_storable_reason(client, engine):
    body = stripe_event_body({"id": "cus_1", "object": "customer"}, "customer.\ud800created")
    answer = client.post("/webhooks/stripe", content=body, headers=stripe_headers(body))
    assert answer.status_code == 200, answer.text
    [(status, reason, processed)] = _rows(engine).values()
    assert (status, processed) == (Status.SKIPPED, True)
    assert reason.startswith("no handler for stripe customer.") and reason.endswith("created")


def paid_id(body: bytes) -> str:
    return str(json.loads(body)["id"])
