"""From a signed GitHub webhook to a pull request, one debit and one meter event.

The real ingress, the real in-process processors (Dramatiq worker threads and the
sweeper), the real database; GitHub and Stripe are respx fakes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from decimal import Decimal

import pytest
import respx
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.testclient import TestClient

from domain import jobs
from ingress.app import create_app
from outbox.db import transaction, utcnow
from outbox.models import Status, WebhookEvent
from outbox.settings import Settings
from processors.inprocess import InProcessProcessors
from tests.conftest import CORPUS
from tests.domain.jobs_world import REPO, World, job_settings, spec
from tests.factories import github_headers
from tests.fakes.github import FakeGitHub
from tests.fakes.stripe import FakeStripe


def wait_until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


@pytest.mark.slow
def test_signed_installation_webhook_then_a_paid_job_end_to_end(
    settings: Settings, engine: Engine, sessions: sessionmaker[Session]
) -> None:
    config = job_settings(
        settings,
        onboarding_pr_enabled=True,
        sweep_interval_seconds=0.1,
        retry_base_seconds=0.05,
        retry_max_delay_seconds=0.2,
    )
    body = json.dumps(
        json.loads((CORPUS / "github/installation/created.payload.json").read_text())
    ).encode()
    with respx.mock(assert_all_called=False) as router:
        github = FakeGitHub(router)
        github.add_repo(REPO)
        stripe = FakeStripe(router)
        world = World(sessions, config, github, stripe)
        github.fail("POST", "/pulls", status=502, times=2)  # retried by the policy, free
        with InProcessProcessors(config, engine=engine, threads=2) as processors:
            app = create_app(config, engine=engine, doorbell=processors.doorbell)
            with TestClient(app) as client:
                answer = client.post(
                    "/webhooks/github",
                    content=body,
                    headers=github_headers(body, "installation"),
                )
                assert answer.status_code == 200, answer.text
                event_id = answer.json()["id"]

                # The onboarding pull request, free, on the default branch.
                wait_until(lambda: len(github.pulls(REPO)) == 1)
                world.link_customer()
                with transaction(sessions) as session:
                    job = jobs.submit_job(session, spec(), now=utcnow())
                wait_until(lambda: len(stripe.meter_events) == 1)

    with sessions() as session:
        event = session.get(WebhookEvent, event_id)
        assert event is not None and event.status == Status.DONE
        onboarding, paid = jobs.list_jobs(session)[::-1]
    assert (onboarding.origin, onboarding.status, onboarding.event_id) == (
        "onboarding",
        "success",
        event_id,
    )
    assert (paid.id, paid.status, paid.pr_number) == (job.id, "success", 2)
    totals = world.totals()
    assert (totals.pull_requests, totals.debits, totals.usage_records) == (2, 1, 1)
    assert totals.balance == config.welcome_credits - Decimal(3)
    assert totals.meter_events == 1
    [sent] = stripe.meter_events.values()
    assert sent["payload"]["value"] == "3"
    assert github.tokens_minted == [957387]  # one token for every call of both jobs
