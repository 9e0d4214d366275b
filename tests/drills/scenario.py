"""A mixed run of webhooks for the fault drills, and what its effects must be at the end.

`Scenario.build(seed)` makes: ACCOUNTS GitHub App installations (each makes an account with
its welcome grant and one onboarding pull request), PURCHASES credit-pack checkouts (a
quarter naming their pack only through line items read from the fake Stripe), refunds of
some of them (full, half, and half-then-full of one charge), subscriptions moving through
several states with their invoices, and PAID_JOBS pull-request jobs submitted through the
domain (each charged once and reported to the Stripe meter once). `expected_*` say what the
ledger, GitHub and Stripe must hold afterwards, from the events alone.

`Sender` delivers them as GitHub and Stripe would: every delivery at least twice, some 20
times, some copies at the same moment, in shuffled order, retrying 5xx and connection
errors with a backoff until a 2xx (bounded in time).
"""

from __future__ import annotations

import collections
import copy
import json
import random
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx

from domain.job_specs import JobSpec
from domain.pull_requests import FileChange
from ingress.signatures import github_signature, stripe_signature
from tests.conftest import CORPUS
from tests.domain.billing_support import (
    PACK_CREDITS,
    charge,
    checkout_session,
    invoice_object,
    line_item,
    subscription_object,
)

ACCOUNTS = 20  #: installations, accounts and onboarding pull requests
PURCHASES = 1600  #: credit-pack checkouts
REFUNDS = 240  #: refunded purchases (a third in full, a third half, a third half then full)
SUBSCRIPTIONS = 20  #: subscriptions, each with a few state changes and invoices
PAID_JOBS = 40  #: pull-request jobs submitted through the domain, one credit each
WELCOME = Decimal(50)  #: credits granted to each new account
CHARGE_CENTS = 1000  #: every refunded charge's amount, so that half is exactly half
SEND_THREADS = 16  #: concurrent senders
SEND_DEADLINE = 150.0  #: seconds one delivery may keep being retried
TWENTY_TIMES = 0.05  #: share of deliveries sent 20 times
CONCURRENT = 0.2  #: share of deliveries whose two copies are sent at the same moment


@dataclass(frozen=True)
class Delivery:
    source: str  # "github" or "stripe"
    body: bytes
    event: str  # GitHub's X-GitHub-Event; Stripe's event type
    delivery_id: str


@dataclass
class Scenario:
    installations: list[Delivery] = field(default_factory=list)
    stripe: list[Delivery] = field(default_factory=list)
    jobs: list[JobSpec] = field(default_factory=list)
    #: account id -> credits the events and jobs leave it with
    balances: dict[int, Decimal] = field(default_factory=dict)
    #: subscription id -> the status Stripe has at the end
    subscription_status: dict[str, str] = field(default_factory=dict)
    #: checkout sessions and their line items, as the fake Stripe must serve them
    checkout_sessions: list[tuple[dict[str, Any], list[dict[str, Any]]]] = field(
        default_factory=list
    )
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    repositories: list[str] = field(default_factory=list)

    @property
    def deliveries(self) -> int:
        return len(self.installations) + len(self.stripe)

    @property
    def expected_pull_requests(self) -> int:
        return ACCOUNTS + PAID_JOBS

    @classmethod
    def build(cls, seed: int, run: str | None = None) -> Scenario:
        rng = random.Random(seed)
        run = run or uuid.uuid4().hex[:6]
        scenario = cls()
        accounts = [5_000 + n for n in range(ACCOUNTS)]
        for n, account in enumerate(accounts):
            scenario._install(n, account)
            scenario.balances[account] = WELCOME
        clock = iter(range(1_780_000_000, 1_790_000_000, 7))
        purchases = []
        for n in range(PURCHASES):
            account = rng.choice(accounts)
            pack = rng.choice(sorted(PACK_CREDITS))
            session_id = f"cs_{run}_{n}"
            by_metadata = n % 4 != 0
            obj = checkout_session(account, session_id=session_id, pack=pack if by_metadata
                                   else None, customer=f"cus_{account}")  # fmt: skip
            scenario.checkout_sessions.append((obj, [line_item(pack)]))
            scenario._stripe("checkout.session.completed", obj, next(clock), run)
            scenario.balances[account] += PACK_CREDITS[pack]
            purchases.append((account, pack, obj["payment_intent"]))
        for n, (account, pack, payment_intent) in enumerate(rng.sample(purchases, REFUNDS)):
            half = charge(payment_intent, CHARGE_CENTS, CHARGE_CENTS // 2)
            full = charge(payment_intent, CHARGE_CENTS, CHARGE_CENTS)
            states = [[full], [half], [half, full]][n % 3]
            for state in states:
                scenario._stripe("charge.refunded", state, next(clock), run)
            taken = PACK_CREDITS[pack] / (2 if states == [half] else 1)
            scenario.balances[account] -= taken
        for n in range(SUBSCRIPTIONS):
            scenario._subscription(rng, n, rng.choice(accounts), clock, run)
        for n in range(PAID_JOBS):
            scenario._job(n, accounts[n % ACCOUNTS], run)
            scenario.balances[accounts[n % ACCOUNTS]] -= 1
        rng.shuffle(scenario.stripe)  # Stripe does not promise any order
        return scenario

    def _install(self, n: int, account: int) -> None:
        payload = json.loads((CORPUS / "github/installation/created.payload.json").read_text())
        login, repo_name = f"drill{n}", "app"
        payload["installation"]["id"] = 90_000 + n
        payload["installation"]["account"].update(id=account, login=login, type="User")
        full_name = f"{login}/{repo_name}"
        payload["repositories"] = [{"id": 70_000 + n, "node_id": f"R_{n}", "name": repo_name,
                                    "full_name": full_name, "private": False}]  # fmt: skip
        payload["sender"].update(id=account, login=login)
        body = json.dumps(payload).encode()
        self.installations.append(Delivery("github", body, "installation", str(uuid.uuid4())))
        self.repositories.append(f"{login}/{repo_name}")

    def _stripe(self, event_type: str, obj: dict[str, Any], created: int, run: str) -> None:
        delivery_id = f"evt_{run}_{len(self.stripe)}"
        event = {"id": delivery_id, "object": "event", "api_version": "2024-06-20",
                 "created": created, "data": {"object": copy.deepcopy(obj)},
                 "livemode": False, "type": event_type}  # fmt: skip
        self.stripe.append(Delivery("stripe", json.dumps(event).encode(), event_type, delivery_id))

    def _subscription(
        self, rng: random.Random, n: int, account: int, clock: Iterator[int], run: str
    ) -> None:
        sub_id = f"sub_{run}_{n}"
        metadata = {"github_account_id": str(account)}
        path = ["incomplete", "active", "past_due", "active", rng.choice(["active", "canceled"])]
        for step, status in enumerate(path):
            obj = subscription_object(f"cus_{account}", status, sub_id=sub_id, metadata=metadata)
            kind = "created" if step == 0 else "deleted" if status == "canceled" else "updated"
            self._stripe(f"customer.subscription.{kind}", obj, next(clock), run)
        invoice = invoice_object(f"cus_{account}", sub_id)
        self._stripe("invoice.payment_failed", invoice, next(clock), run)
        self._stripe("invoice.paid", invoice, next(clock), run)
        self.subscriptions[sub_id] = subscription_object(
            f"cus_{account}", path[-1], sub_id=sub_id, metadata=metadata
        )
        self.subscription_status[sub_id] = path[-1]

    def _job(self, n: int, account: int, run: str) -> None:
        index = account - 5_000
        self.jobs.append(
            JobSpec(
                account=str(account),
                installation=90_000 + index,
                repository=self.repositories[index],
                base_branch="main",
                title=f"Drill job {n}",
                body="Opened by a fault drill.",
                files=(FileChange(f"docs/drill-{n}.md", f"job {n}\n"),),
                required_credits=Decimal(1),
                key=f"drill-{run}-{n}",
            )
        )


# --- sending ---------------------------------------------------------------------------


@dataclass
class Secrets:
    github: str
    stripe: str


class Sender:
    """Posts deliveries to an ingress the way the providers do, and keeps score."""

    def __init__(self, base_url: str, secrets: Secrets, seed: int) -> None:
        self.base_url = base_url
        self.secrets = secrets
        self.rng = random.Random(seed)
        self.statuses: collections.Counter[int] = collections.Counter()
        self.undelivered: list[str] = []
        self.refused: list[tuple[str, int, str]] = []
        self._lock = threading.Lock()
        self._local = threading.local()

    def send_all(self, deliveries: list[Delivery]) -> None:
        """Every delivery twice; some 20 times; some with their two copies at once."""
        tasks: list[tuple[Delivery, int]] = []
        for delivery in deliveries:
            roll = self.rng.random()
            if roll < TWENTY_TIMES:
                tasks.append((delivery, 20))
            elif roll < TWENTY_TIMES + CONCURRENT:
                tasks += [(delivery, 1), (delivery, 1)]  # side by side: sent concurrently
            else:
                tasks.append((delivery, 2))
        with ThreadPoolExecutor(SEND_THREADS) as pool:
            list(pool.map(lambda task: self._send_times(*task), tasks))

    def _send_times(self, delivery: Delivery, times: int) -> None:
        for _ in range(times):
            self.send(delivery)

    def send(self, delivery: Delivery) -> None:
        """One delivery, retried on 5xx and connection errors until a 2xx or the deadline."""
        client = self._client()
        deadline = time.monotonic() + SEND_DEADLINE
        pause = 0.1
        while True:
            try:
                url = f"{self.base_url}/webhooks/{delivery.source}"
                headers = self._headers(delivery)
                answer = client.post(url, content=delivery.body, headers=headers)
                status = answer.status_code
            except httpx.HTTPError:
                status = 0
            with self._lock:
                self.statuses[status] += 1
            if 200 <= status < 300:
                return
            if 400 <= status < 500:
                with self._lock:
                    self.refused.append((delivery.delivery_id, status, answer.text[:200]))
                return
            if time.monotonic() > deadline:
                with self._lock:
                    self.undelivered.append(delivery.delivery_id)
                return
            time.sleep(pause)
            pause = min(2.0, pause * 2)

    def _client(self) -> httpx.Client:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = httpx.Client(timeout=10.0)
        return client

    def _headers(self, delivery: Delivery) -> dict[str, str]:
        if delivery.source == "github":
            return {
                "Content-Type": "application/json",
                "X-GitHub-Event": delivery.event,
                "X-GitHub-Delivery": delivery.delivery_id,
                "X-Hub-Signature-256": github_signature(self.secrets.github, delivery.body),
            }
        signed_at = int(time.time())  # each retry is signed anew, as Stripe does
        return {
            "Content-Type": "application/json",
            "Stripe-Signature": stripe_signature(self.secrets.stripe, delivery.body, signed_at),
        }
