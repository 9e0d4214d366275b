"""End to end between real processes: webhooks posted over HTTP to `outbox serve`, applied by
`outbox worker -p 2` beside `outbox sweep`, operator commands run as `outbox ...` processes,
all on Postgres and Redis, with GitHub served by a local fake. Each test is one money or
ordering rule of docs/billing.md that the in-process tests also prove; here no thread shares
memory with another, so only the database and Redis keep the promises.

One service (database, processes, fake GitHub) serves the module: the tests use accounts,
installations and subscriptions of their own.
"""

from __future__ import annotations

import itertools
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from domain import balances, jobs
from domain import installations as inst
from domain.account_opening import ensure_account
from domain.accounts import link_customer
from domain.installation_repositories import RepositoryFacts, add_repositories
from domain.installations import InstallationFacts, record_installation
from domain.subscriptions import subscription
from outbox.db import make_engine, make_sessionmaker, transaction
from outbox.migrate import upgrade
from outbox.models import Status, WebhookEvent
from tests.conftest import (
    CORPUS,
    GITHUB_SECRET,
    STRIPE_SECRET,
    create_postgres_database,
    drop_postgres_database,
)
from tests.domain.billing_support import (
    NOW,
    PACK_CENTS,
    PRO,
    charge,
    checkout_session,
    invoice_object,
    seed,
    subscription_object,
)
from tests.factories import github_headers, stripe_event_body, stripe_headers
from tests.fakes.github import throwaway_private_key
from tests.fakes.providers import FakeProviders
from tests.services import WORKER_READY, OutboxProcess, free_port, outbox_env, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

CREATED = int(NOW.timestamp())  #: the Stripe `created` second of a sign-up's events


@dataclass
class Service:
    """The running service: post webhooks, run `outbox` commands, read the database."""

    http: httpx.Client
    env: dict[str, str]
    sessions: sessionmaker[Session]
    fake: FakeProviders
    log_dir: Path

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> int:
        answer = self.http.post(path, content=body, headers=headers)
        assert answer.status_code == 200, answer.text
        return int(answer.json()["id"])

    def stripe(self, body: bytes) -> int:
        return self.post("/webhooks/stripe", body, stripe_headers(body))

    def github(self, body: bytes, event: str) -> int:
        return self.post("/webhooks/github", body, github_headers(body, event))

    def outbox(self, *args: str) -> str:
        """An operator's `outbox ...` command, as its own process; its output."""
        done = OutboxProcess(args, self.env, log_dir=self.log_dir)
        result = subprocess.run(
            done.argv, env=done.env, capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, f"outbox {' '.join(args)}: {result.stderr}{result.stdout}"
        return result.stdout

    def done(self, *event_ids: int) -> bool:
        with transaction(self.sessions) as s:
            rows = [s.get(WebhookEvent, event_id) for event_id in event_ids]
            return all(row is not None and row.status == Status.DONE for row in rows)


@pytest.fixture(scope="module")
def service(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    log_dir = tmp_path_factory.mktemp("processes")
    url = create_postgres_database("outbox_money")
    engine: Engine = make_engine(url, pool_size=2)
    try:
        upgrade(url)
        sessions = make_sessionmaker(engine)
        seed(sessions)  # the pack catalog
        key_file = log_dir / "app.pem"
        key_file.write_text(throwaway_private_key())
        with FakeProviders() as fake:
            env = outbox_env(
                url, redis_url=redis_url, github_webhook_secret=GITHUB_SECRET,
                stripe_webhook_secret=STRIPE_SECRET, stripe_mode="any",
                github_app_id="31338", github_app_private_key_file=key_file,
                github_api_url=fake.url, welcome_credits=0,
                # A waiting job stays put until the test makes it due (`outbox jobs retry`).
                retry_base_seconds=600, retry_max_delay_seconds=600,
                sweep_interval_seconds=0.3,
            )  # fmt: skip
            port = free_port()
            serve = OutboxProcess(["serve", "--port", str(port)], env, port=port, log_dir=log_dir)
            workers = OutboxProcess(["worker", "-p", "2", "-t", "2"], env, log_dir=log_dir)
            sweeper = OutboxProcess(["sweep"], env, log_dir=log_dir)
            with serve, workers, sweeper, httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
                workers.wait_for_output(WORKER_READY, count=2, timeout=60)
                yield Service(http, env, sessions, fake, log_dir)
    finally:
        engine.dispose()
        drop_postgres_database(url)


# --- case 1: refunded credits held by a job ---------------------------------------------------

BUYER, BUYER_INSTALLATION, BUYER_REPO = 610_001, 610_101, "buyer/site"


def standing(sessions: sessionmaker[Session]) -> tuple[Decimal, Decimal, Decimal]:
    """(balance, available, debt) of the buyer."""
    with transaction(sessions) as s:
        now = balances.standing(s, BUYER)
        return now.balance, now.available, now.debt


def job_status(sessions: sessionmaker[Session], job_id: int) -> tuple[str, str | None]:
    with transaction(sessions) as s:
        job = s.get(jobs.PrJob, job_id)
        assert job is not None
        return job.status, job.last_error


def submit(service: Service, key: str) -> int:
    spec = service.log_dir / f"{key}.json"
    spec.write_text(json.dumps({
        "account": BUYER, "installation": BUYER_INSTALLATION, "repository": BUYER_REPO,
        "title": "Add the linter configuration", "body": "Opened by a job.",
        "files": [{"path": ".ruff.toml", "content": "line-length = 100\n"}],
        "required_credits": 85, "key": key,
    }))  # fmt: skip
    return int(json.loads(service.outbox("jobs", "submit", str(spec), "--json"))["id"])


def test_credits_refunded_while_a_job_holds_them_stay_unspendable_when_it_fails(
    service: Service,
) -> None:
    sessions = service.sessions
    with transaction(sessions) as s:  # the buyer has installed the App on one repository
        ensure_account(s, BUYER, login="buyer", kind="User", now=NOW, welcome_credits=Decimal(0))
        record_installation(
            s, InstallationFacts(BUYER_INSTALLATION, BUYER, "buyer", "User", 1, "selected", {},
                                 False), now=NOW, event_id=None,
        )  # fmt: skip
        add_repositories(
            s, BUYER_INSTALLATION, [RepositoryFacts(610_201, BUYER_REPO, False)], now=NOW,
            event_id=None,
        )  # fmt: skip
    service.fake.github.add_repo(BUYER_REPO)
    bought = checkout_session(BUYER, pack=PRO)
    service.stripe(stripe_event_body(bought, "checkout.session.completed"))
    wait_until(lambda: standing(sessions) == (85, 85, 0), what="the pack granted")

    service.fake.github.fail("GET", "/pulls", status=502)  # the first attempt waits, holding
    first = submit(service, "first")
    wait_until(lambda: job_status(sessions, first)[1] is not None, what="the first attempt")
    assert job_status(sessions, first)[0] in jobs.OPEN and standing(sessions) == (85, 0, 0)

    refunded = charge(bought["payment_intent"], PACK_CENTS[PRO], PACK_CENTS[PRO])
    service.stripe(stripe_event_body(refunded, "charge.refunded"))
    wait_until(lambda: standing(sessions) == (85, 0, 85), what="the refund's debt")

    service.fake.github.fail("GET", "/pulls", status=404, body={"message": "Not Found"})
    service.outbox("jobs", "retry", str(first))  # due now: the repository is gone, it fails
    wait_until(lambda: job_status(sessions, first)[0] == "failed", what="the first job failed")
    assert standing(sessions) == (0, 0, 0)  # its released hold paid the debt

    second = submit(service, "second")
    wait_until(lambda: job_status(sessions, second)[0] == "failed", what="the second job")
    assert "cannot pay 85" in (job_status(sessions, second)[1] or "")
    assert service.fake.github.pull_requests_opened() == 0
    with transaction(sessions) as s:
        assert [e.key for e in balances.history(s, BUYER)][-1] == f"settle:pr_job:{first}:1"


# --- case 2: a sign-up's same-second events in any order ----------------------------------------

SUBSCRIBER, CUSTOMER = 620_001, "cus_between_processes"


def sign_up(sub_id: str) -> list[bytes]:
    """Subscription created `incomplete`, first invoice paid, subscription updated `active`:
    Stripe's three events of a sign-up, all in one second."""
    events = [
        (subscription_object(CUSTOMER, "incomplete", sub_id=sub_id),
         "customer.subscription.created"),
        (invoice_object(CUSTOMER, sub_id, billing_reason="subscription_create"), "invoice.paid"),
        (subscription_object(CUSTOMER, "active", sub_id=sub_id), "customer.subscription.updated"),
    ]  # fmt: skip
    return [stripe_event_body(obj, kind, created=CREATED) for obj, kind in events]


def status_of(sessions: sessionmaker[Session], sub_id: str) -> str | None:
    with transaction(sessions) as s:
        row = subscription(s, sub_id)
        return None if row is None else row.status


def test_a_sign_up_delivered_in_each_of_its_six_orders_ends_active(service: Service) -> None:
    seed(service.sessions, SUBSCRIBER)
    with transaction(service.sessions) as s:
        link_customer(s, SUBSCRIBER, CUSTOMER, now=NOW)
    orders = list(itertools.permutations(range(3)))
    posted: list[int] = []
    for n, order in enumerate(orders):
        bodies = sign_up(f"sub_processes_{n}")
        posted += [service.stripe(bodies[index]) for index in order]
    wait_until(lambda: service.done(*posted), timeout=60, what="the sign-ups applied")
    ends = {
        order: status_of(service.sessions, f"sub_processes_{n}") for n, order in enumerate(orders)
    }
    assert ends == dict.fromkeys(orders, "active")


# --- case 5: an uninstalled App stays removed --------------------------------------------------

REMOVED_INSTALLATION, REMOVER = 630_101, {"id": 630_001, "login": "remover", "type": "User"}


def installation_body(relative: str, **installation: Any) -> bytes:
    """A corpus delivery about the remover's installation (its own ids: not the corpus's)."""
    payload = json.loads((CORPUS / "github" / relative).read_text())
    created = json.loads((CORPUS / "github/installation/created.payload.json").read_text())
    payload["installation"] = {
        **created["installation"], "id": REMOVED_INSTALLATION,
        "account": {**created["installation"]["account"], **REMOVER}, **installation,
    }  # fmt: skip
    payload["sender"] = {**payload["sender"], **REMOVER}
    for key in ("repositories", "repositories_added", "repositories_removed"):
        for n, repo in enumerate(payload.get(key, [])):
            repo.update(id=630_200 + n, full_name=f"remover/repo{n}", name=f"repo{n}")
    return json.dumps(payload).encode()


def test_a_replayed_creation_and_a_late_repository_event_leave_an_uninstalled_app_removed(
    service: Service,
) -> None:
    created = installation_body("installation/created.payload.json")
    deleted = installation_body("installation/deleted.payload.json", updated_at=1557933651)
    added = installation_body("installation_repositories/added.payload.json")
    first = service.github(created, "installation")
    gone = service.github(deleted, "installation")
    wait_until(lambda: service.done(first, gone), what="installed, then uninstalled")

    service.outbox("events", "replay", str(first), "--yes")  # an operator replays the creation
    late = service.github(added, "installation_repositories")  # and GitHub delivers late
    wait_until(lambda: service.done(first, late), what="the replay and the late event")
    with transaction(service.sessions) as s:
        row = s.get(inst.Installation, REMOVED_INSTALLATION)
        assert row is not None and row.status == inst.InstallationStatus.DELETED
        assert inst.why_unusable(s, REMOVED_INSTALLATION, "remover/repo0") == (
            f"installation {REMOVED_INSTALLATION} was removed (the App was uninstalled)"
        )
