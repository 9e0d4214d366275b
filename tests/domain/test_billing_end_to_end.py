"""End to end: signed Stripe webhooks posted to the ingress, applied by the in-process worker."""

from __future__ import annotations

from decimal import Decimal

import pytest
import respx
from starlette.testclient import TestClient

from domain import balances, jobs
from domain.accounts import Account
from domain.subscriptions import subscription
from ingress.app import create_app
from outbox import operator_writes
from outbox.db import make_sessionmaker, transaction, utcnow
from outbox.models import Status, WebhookEvent
from processors.inprocess import InProcessProcessors
from tests.domain.billing_support import (
    PACK_CENTS,
    PRO,
    charge,
    checkout_session,
    seed,
    subscription_object,
)
from tests.domain.jobs_world import ACCOUNT, REPO, World, job_settings
from tests.factories import stripe_event_body, stripe_headers
from tests.fakes.github import FakeGitHub
from tests.fakes.stripe import FakeStripe
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
                assert operator_writes.replay(s, [first["id"], other["id"]], now=replayed_at)
            wait_until(lambda: _done_since(sessions, replayed_at) == 2)
    with transaction(sessions) as s:
        assert balances.balance(s, 77) == Decimal(50 + 85)
        grants = [e for e in balances.history(s, 77) if e.key.startswith("pack:")]
        assert len(grants) == 1 and grants[0].event_id in (first["id"], other["id"])
        assert s.get(Account, 77).stripe_customer_id == "cus_e2e"


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


@pytest.mark.slow
def test_credits_refunded_while_a_job_holds_them_are_not_spendable_when_it_fails(
    settings, engine, sessions
):
    """Buy 85 credits, a job reserves them all, the pack is refunded (85 of debt), the job
    fails: its released hold pays the debt, and a second job finds nothing to spend."""
    config = job_settings(
        settings, stripe_api_key=None, sweep_interval_seconds=0.1,
        retry_base_seconds=60.0, retry_max_delay_seconds=60.0,
    )  # fmt: skip
    bought = checkout_session(ACCOUNT, pack=PRO)
    refunded = charge(bought["payment_intent"], PACK_CENTS[PRO], PACK_CENTS[PRO])
    with respx.mock(assert_all_called=False) as router:
        github = FakeGitHub(router)
        github.add_repo(REPO)
        world = World(sessions, config, github, FakeStripe(router))
        world.install(credits=Decimal(0))
        seed(sessions)  # the pack catalog
        github.fail("GET", "/pulls", status=502)  # first attempt: retried later, still held
        github.fail("GET", "/pulls", status=404, body={"message": "Not Found"})  # then gone
        with InProcessProcessors(config, engine=engine, threads=2) as processors:
            app = create_app(config, engine=engine, doorbell=processors.doorbell)
            with TestClient(app) as client:
                post(client, stripe_event_body(bought, "checkout.session.completed"))
                wait_until(lambda: _standing(sessions) == (85, 85, 0))
                first = world.submit(required_credits=85)
                wait_until(lambda: world.job(first).last_error is not None)
                assert _standing(sessions) == (85, 0, 0)  # reserved by the waiting job

                post(client, stripe_event_body(refunded, "charge.refunded"))
                wait_until(lambda: _standing(sessions) == (85, 0, 85))
                with transaction(sessions) as s:
                    jobs.retry_now(s, first, now=utcnow())  # due now: it fails for good
                wait_until(lambda: world.job(first).status == "failed")
                assert _standing(sessions) == (0, 0, 0)

                second = world.submit(required_credits=85, key="second")
                wait_until(lambda: world.job(second).status == "failed")
    assert "cannot pay 85" in (world.job(second).last_error or "")
    assert world.totals().debits == 0 and github.pulls(REPO) == []
    with transaction(sessions) as s:
        assert [e.key for e in balances.history(s, ACCOUNT)][-1] == f"settle:pr_job:{first}:1"


def _standing(sessions) -> tuple[Decimal, Decimal, Decimal]:
    """(balance, available, debt) of the jobs world's account."""
    with transaction(sessions) as s:
        now = balances.standing(s, ACCOUNT)
        return now.balance, now.available, now.debt
