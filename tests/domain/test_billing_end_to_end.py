"""End to end: signed Stripe webhooks posted to the ingress, applied by the in-process worker."""

from __future__ import annotations

from decimal import Decimal

import pytest
from starlette.testclient import TestClient

from domain import ledger
from domain.subscriptions import subscription
from ingress.app import create_app
from outbox import store
from outbox.db import make_sessionmaker, transaction, utcnow
from outbox.models import Status, WebhookEvent
from processors.inprocess import InProcessProcessors
from tests.domain.billing_support import (
    PRO,
    checkout_session,
    seed,
    subscription_object,
)
from tests.factories import stripe_event_body, stripe_headers
from tests.services import wait_until


def statuses(sessions) -> list[str]:
    with transaction(sessions) as s:
        return [row.status for row in s.query(WebhookEvent).order_by(WebhookEvent.id)]


def post(client: TestClient, body: bytes) -> dict:
    answer = client.post("/webhooks/stripe", content=body, headers=stripe_headers(body))
    assert answer.status_code == 200, answer.text
    return answer.json()


@pytest.mark.slow
def test_a_signed_checkout_webhook_delivered_twice_grants_the_pack_once(settings, engine):
    sessions = make_sessionmaker(engine)
    seed(sessions, 77, welcome="50")
    fast = settings.model_copy(update={"retry_base_seconds": 0.05, "sweep_interval_seconds": 0.2})
    session_obj = checkout_session(77, pack=PRO, customer="cus_e2e")
    completed = stripe_event_body(session_obj, "checkout.session.completed")
    succeeded = stripe_event_body(session_obj, "checkout.session.async_payment_succeeded")
    with InProcessProcessors(fast, engine=engine, threads=2) as processors:
        app = create_app(fast, engine=engine, doorbell=processors.doorbell)
        with TestClient(app) as client:
            first = post(client, completed)
            again = post(client, completed)  # Stripe's redelivery: the same event id
            other = post(client, succeeded)  # the other event of the same session
            assert (first["duplicate"], again["duplicate"], other["duplicate"]) == (
                False, True, False,
            )  # fmt: skip
            wait_until(lambda: statuses(sessions) == [Status.DONE, Status.DONE])
            replayed_at = utcnow()
            with transaction(sessions) as s:  # an operator replays both events
                assert store.replay(s, [first["id"], other["id"]], now=replayed_at)
            wait_until(lambda: _done_since(sessions, replayed_at) == 2)
    with transaction(sessions) as s:
        assert ledger.balance(s, 77) == Decimal(50 + 85)
        grants = [e for e in ledger.history(s, 77) if e.key.startswith("pack:")]
        assert len(grants) == 1 and grants[0].event_id in (first["id"], other["id"])
        assert s.get(ledger.Account, 77).stripe_customer_id == "cus_e2e"


@pytest.mark.slow
def test_a_subscription_for_an_account_created_later_is_retried_until_it_applies(settings, engine):
    sessions = make_sessionmaker(engine)
    seed(sessions)
    fast = settings.model_copy(
        update={"retry_base_seconds": 0.1, "retry_max_delay_seconds": 0.3,
                "sweep_interval_seconds": 0.1}
    )  # fmt: skip
    obj = subscription_object(
        "cus_late", "active", sub_id="sub_late", metadata={"github_account_id": "88"}
    )
    body = stripe_event_body(obj, "customer.subscription.created")
    with InProcessProcessors(fast, engine=engine, threads=1) as processors:
        app = create_app(fast, engine=engine, doorbell=processors.doorbell)
        with TestClient(app) as client:
            event_id = post(client, body)["id"]
            wait_until(lambda: "account 88 does not exist yet" in _last_error(sessions, event_id))
            # Kept and tried again, not dropped nor dead.
            assert statuses(sessions) in ([Status.PENDING], [Status.PROCESSING])
            seed(sessions, 88)
            wait_until(lambda: statuses(sessions) == [Status.DONE])
    with transaction(sessions) as s:
        assert subscription(s, "sub_late").account_id == 88


def _done_since(sessions, since) -> int:
    with transaction(sessions) as s:
        rows = s.query(WebhookEvent).all()
        return sum(r.status == Status.DONE and r.processed_at >= since for r in rows)


def _last_error(sessions, event_id: int) -> str:
    with transaction(sessions) as s:
        return s.get(WebhookEvent, event_id).last_error or ""
