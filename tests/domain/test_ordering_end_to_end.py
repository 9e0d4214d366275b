"""End to end: Stripe and GitHub deliveries in awkward orders, posted to the ingress and
applied by the in-process worker threads, end where the providers do."""

from __future__ import annotations

import itertools
import json
import threading
import time
from typing import Any

import httpx
import pytest
import respx
from pydantic import SecretStr
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.testclient import TestClient

from domain import installation_repositories as repos
from domain import installations as inst
from domain.accounts import link_customer
from domain.subscriptions import subscription
from ingress.app import create_app
from outbox import operator_writes
from outbox.db import make_engine, make_sessionmaker, transaction, utcnow
from outbox.migrate import upgrade
from outbox.models import Status, WebhookEvent
from outbox.settings import Settings
from processors.inprocess import InProcessProcessors
from tests.conftest import (
    CORPUS,
    STRIPE_SECRET,
    create_postgres_database,
    drop_postgres_database,
)
from tests.domain.billing_support import (
    NOW,
    STRIPE_BASE,
    invoice_object,
    seed,
    subscription_object,
)
from tests.factories import github_headers, stripe_event_body, stripe_headers
from tests.fakes.providers import FakeProviders
from tests.fakes.stripe import FakeStripe
from tests.services import WORKER_READY, OutboxProcess, free_port, outbox_env, wait_until

pytestmark = pytest.mark.slow

CUSTOMER = "cus_ordering"
CREATED = int(NOW.timestamp())  #: seconds; the Stripe `created` of every sign-up event


def fast(settings: Settings, **changes: Any) -> Settings:
    return settings.model_copy(
        update={"retry_base_seconds": 0.05, "sweep_interval_seconds": 0.2, **changes}
    )


def post_stripe(client: TestClient, body: bytes) -> int:
    answer = client.post("/webhooks/stripe", content=body, headers=stripe_headers(body))
    assert answer.status_code == 200, answer.text
    return int(answer.json()["id"])


def all_done(sessions: sessionmaker[Session], count: int) -> bool:
    with transaction(sessions) as s:
        rows = [(row.status, row.last_error) for row in s.query(WebhookEvent)]
    return len(rows) == count and all(status == Status.DONE for status, _ in rows)


def status_of(sessions: sessionmaker[Session], sub_id: str) -> str:
    with transaction(sessions) as s:
        row = subscription(s, sub_id)
        assert row is not None
        return row.status


def with_customer(sessions: sessionmaker[Session]) -> None:
    seed(sessions, 1)
    with transaction(sessions) as s:
        link_customer(s, 1, CUSTOMER, now=NOW)


def sign_up(sub_id: str) -> list[bytes]:
    """Subscription created `incomplete`, first invoice paid, subscription updated `active`:
    Stripe's three events of a sign-up, all in one second."""
    return [
        stripe_event_body(
            subscription_object(CUSTOMER, "incomplete", sub_id=sub_id),
            "customer.subscription.created",
            created=CREATED,
        ),
        stripe_event_body(
            invoice_object(CUSTOMER, sub_id, billing_reason="subscription_create"),
            "invoice.paid",
            created=CREATED,
        ),
        stripe_event_body(
            subscription_object(CUSTOMER, "active", sub_id=sub_id),
            "customer.subscription.updated",
            created=CREATED,
        ),
    ]


def test_a_sign_up_delivered_in_each_of_its_six_orders_ends_active(settings, engine):
    sessions = make_sessionmaker(engine)
    with_customer(sessions)
    config = fast(settings)
    orders = list(itertools.permutations(range(3)))
    with InProcessProcessors(config, engine=engine, threads=2) as processors:
        app = create_app(config, engine=engine, doorbell=processors.doorbell)
        with TestClient(app) as client:
            for n, order in enumerate(orders):
                bodies = sign_up(f"sub_order_{n}")
                for index in order:
                    post_stripe(client, bodies[index])
            wait_until(lambda: all_done(sessions, 3 * len(orders)), timeout=30)
    ends = {order: status_of(sessions, f"sub_order_{n}") for n, order in enumerate(orders)}
    assert ends == {order: "active" for order in orders}


class ScriptedSubscriptionReads(FakeStripe):
    """Stripe whose reads of a subscription (GET /v1/subscriptions/{id}) follow a script of
    (seconds, status), one per read, noting how many reads are in flight at once; every
    other call is the plain fake's."""

    def __init__(self, script: list[tuple[float, str]], **fake: Any) -> None:
        super().__init__(**fake)
        self.script = list(script)
        self.in_flight = 0
        self.most_in_flight = 0
        self.reads = 0
        self._reading = threading.Lock()

    def serve(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method != "GET" or not path.startswith("/v1/subscriptions/"):
            return super().serve(request)
        with self._reading:
            delay, status = self.script[min(self.reads, len(self.script) - 1)]
            self.reads += 1
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            time.sleep(delay)
            obj = subscription_object(CUSTOMER, status, sub_id=path.rsplit("/", 1)[1])
            return httpx.Response(200, json=obj)
        finally:
            with self._reading:
                self.in_flight -= 1


def test_an_older_event_arriving_late_waits_for_the_newer_one_and_its_stale_read_loses(
    settings, engine
):
    """With STRIPE_API_KEY: the cancellation arrives first and is being applied (its read of
    the subscription is slow) when an older update arrives. The update must wait for it;
    and its own read, begun before Stripe's answer caught up ("active"), must not revive
    the cancelled subscription."""
    sessions = make_sessionmaker(engine)
    with_customer(sessions)
    config = fast(settings, stripe_api_key=SecretStr("sk_test_x"), stripe_api_base=STRIPE_BASE)
    newer = stripe_event_body(
        subscription_object(CUSTOMER, "canceled", sub_id="sub_race"),
        "customer.subscription.deleted",
        created=CREATED + 10,
    )
    older = stripe_event_body(
        subscription_object(CUSTOMER, "active", sub_id="sub_race"),
        "customer.subscription.updated",
        created=CREATED,
    )
    with respx.mock(assert_all_called=False) as router:
        router.route(host="testserver").pass_through()
        stripe = ScriptedSubscriptionReads([(3.0, "canceled"), (2.0, "active")], router=router)
        with InProcessProcessors(config, engine=engine, threads=2) as processors:
            app = create_app(config, engine=engine, doorbell=processors.doorbell)
            with TestClient(app) as client:
                post_stripe(client, newer)
                wait_until(lambda: stripe.reads == 1)  # the cancellation is being applied
                older_id = post_stripe(client, older)
                time.sleep(0.5)  # time enough for a second worker thread to take it
                with transaction(sessions) as s:
                    assert s.get(WebhookEvent, older_id).status == Status.PENDING
                wait_until(lambda: all_done(sessions, 2), timeout=30)
    assert stripe.most_in_flight == 1
    assert status_of(sessions, "sub_race") == "canceled"


# --- GitHub installations ----------------------------------------------------------------


def github_body(relative: str, **installation: Any) -> bytes:
    payload = json.loads((CORPUS / "github" / relative).read_text())
    created = json.loads((CORPUS / "github/installation/created.payload.json").read_text())
    payload["installation"] = {**created["installation"], **installation}
    return json.dumps(payload).encode()


def post_github(client: TestClient, body: bytes, event: str) -> int:
    answer = client.post("/webhooks/github", content=body, headers=github_headers(body, event))
    assert answer.status_code == 200, answer.text
    return int(answer.json()["id"])


def test_a_replayed_creation_and_late_repository_events_leave_an_uninstalled_app_removed(
    settings: Settings, engine: Engine
) -> None:
    sessions = make_sessionmaker(engine)
    config = fast(settings)
    created = github_body("installation/created.payload.json")
    deleted = github_body("installation/deleted.payload.json", updated_at=1557933651)
    added = github_body("installation_repositories/added.payload.json")
    with InProcessProcessors(config, engine=engine, threads=2) as processors:
        app = create_app(config, engine=engine, doorbell=processors.doorbell)
        with TestClient(app) as client:
            created_id = post_github(client, created, "installation")
            post_github(client, deleted, "installation")
            wait_until(lambda: all_done(sessions, 2))
            with transaction(sessions) as s:  # an operator replays the old creation
                assert operator_writes.replay(s, [created_id], now=utcnow()) == [created_id]
            post_github(client, added, "installation_repositories")  # late
            wait_until(lambda: all_done(sessions, 3))
    with transaction(sessions) as s:
        assert s.get(inst.Installation, 957387).status == inst.InstallationStatus.DELETED
        assert [r.full_name for r in repos.repositories_of(s, 957387)] == ["Codertocat/Hello-World"]
        assert inst.why_unusable(s, 957387, "Codertocat/Hello-World") == (
            "installation 957387 was removed (the App was uninstalled)"
        )


# --- the same race between real processes --------------------------------------------------


@pytest.mark.postgres
@pytest.mark.redis
def test_worker_processes_never_apply_two_events_of_a_subscription_side_by_side(
    redis_url: str, tmp_path
) -> None:
    url = create_postgres_database("outbox_order")
    engine = make_engine(url, pool_size=2)
    try:
        upgrade(url)
        sessions = make_sessionmaker(engine)
        with_customer(sessions)
        with FakeProviders() as fake:
            fake.stripe = ScriptedSubscriptionReads([(3.0, "canceled"), (0.0, "active")])
            port = free_port()
            env = outbox_env(
                url, redis_url=redis_url, stripe_webhook_secret=STRIPE_SECRET, stripe_mode="any",
                stripe_api_key="sk_test_x", stripe_api_base=fake.url, sweep_interval_seconds=0.3,
            )  # fmt: skip
            serve = OutboxProcess(["serve", "--port", str(port)], env, port=port, log_dir=tmp_path)
            workers = OutboxProcess(["worker", "-p", "2", "-t", "2"], env, log_dir=tmp_path)
            sweeper = OutboxProcess(["sweep"], env, log_dir=tmp_path)
            with serve, workers, sweeper, httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
                workers.wait_for_output(WORKER_READY, count=2)

                def post(body: bytes) -> int:
                    answer = http.post(
                        "/webhooks/stripe", content=body, headers=stripe_headers(body)
                    )
                    assert answer.status_code == 200, answer.text
                    return int(answer.json()["id"])

                post(race_event("canceled", "customer.subscription.deleted", CREATED + 10))
                wait_until(lambda: fake.stripe.reads == 1, what="the cancellation's read")
                older = post(race_event("active", "customer.subscription.updated", CREATED))
                time.sleep(1.0)  # time enough for another worker to take it
                with transaction(sessions) as s:
                    assert s.get(WebhookEvent, older).status == Status.PENDING
                wait_until(lambda: all_done(sessions, 2), what="both events")
        assert status_of(sessions, "sub_race") == "canceled"
    finally:
        engine.dispose()
        drop_postgres_database(url)


def race_event(status: str, event_type: str, created: int) -> bytes:
    obj = subscription_object(CUSTOMER, status, sub_id="sub_race")
    return stripe_event_body(obj, event_type, created=created)
