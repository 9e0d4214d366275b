"""The mix's workloads: the webhooks production sends (GitHub and Stripe, signed as each
signs), built ahead of a run, and what their effects must be once they are applied.

bench/mix.py sends them through the ingress and checks the effects; bench/mix_growth.py,
bench/batch_statements.py and bench/partitions.py build them too.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from bench.loadgen import build_request
from bench.workload import ACCOUNTS, STRIPE_SECRET, purchase_body
from ingress.signatures import github_signature, stripe_signature

GITHUB_SECRET = "bench_github_secret"
INSTALLED = 500  #: accounts 1..INSTALLED installed the App (installation id = INSTALLATION + id)
INSTALLATION = 10_000_000
SUBSCRIPTIONS = 1000  #: subscriptions the mix's subscription events are about
PACKS = {"price_decouverte": 25, "price_pro": 85, "price_organisme": 250}  #: the seed catalog
REFUNDED_PACK = "price_pro"  #: what the purchases refunded in the mix bought, before timing
CHARGE = 1000  #: minor units of each refunded purchase's charge; half of it is refunded
#: Share of each kind of event in the mix (the production shape this benchmark stands for).
MIX = {
    "github_stored": 0.55,
    "repositories": 0.05,
    "checkout": 0.15,
    "subscription": 0.12,
    "invoice": 0.05,
    "refund": 0.03,
    "stripe_unhandled": 0.05,
}


def refunds_for(events: int) -> int:
    """Purchases made before timing for the refunds of a mix of `events`, with room to spare."""
    return int(events * MIX["refund"] * 1.2)


STORED_ONLY = ("push", "pull_request", "issues", "issue_comment", "check_run", "check_suite")


@dataclass
class Request:
    """One webhook to send: its path, body, and headers not yet signed."""

    path: str
    body: bytes
    headers: dict[str, str]

    def signed(self, port: int) -> bytes:
        headers = dict(self.headers)
        if self.path.endswith("stripe"):
            headers["Stripe-Signature"] = stripe_signature(
                STRIPE_SECRET, self.body, int(time.time())
            )
        else:
            headers["X-Hub-Signature-256"] = github_signature(GITHUB_SECRET, self.body)
        return build_request("127.0.0.1", port, self.path, self.body, headers)


def stripe_request(event_id: str, event_type: str, obj: dict[str, Any], created: int) -> Request:
    event = {
        "id": event_id,
        "object": "event",
        "type": event_type,
        "livemode": False,
        "created": created,
        "api_version": "2024-06-20",
        "data": {"object": obj},
    }
    body = json.dumps(event, separators=(",", ":")).encode()
    return Request("/webhooks/stripe", body, {"Content-Type": "application/json"})


def github_request(event: str, payload: dict[str, Any]) -> Request:
    body = json.dumps(payload, separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": str(uuid.uuid4()),
    }
    return Request("/webhooks/github", body, headers)


def _account(account_id: int) -> dict[str, Any]:
    return {"id": account_id, "login": f"bench{account_id}", "type": "User"}


def _installation(account_id: int) -> dict[str, Any]:
    return {
        "id": INSTALLATION + account_id,
        "account": _account(account_id),
        "app_id": 1,
        "repository_selection": "selected",
        "permissions": {"contents": "write"},
        "created_at": "2026-01-01T00:00:00Z",
    }


def _repository(account_id: int, n: int) -> dict[str, Any]:
    return {
        "id": account_id * 1000 + n,
        "full_name": f"bench{account_id}/repo{n}",
        "private": False,
        "owner": _account(account_id),
    }


def installations() -> list[Request]:
    """Accounts 1..INSTALLED install the App (their welcome grant is made once)."""
    return [
        github_request(
            "installation",
            {
                "action": "created",
                "installation": _installation(a),
                "repositories": [_repository(a, 0)],
                "sender": _account(a),
            },
        )
        for a in range(1, INSTALLED + 1)
    ]


def customer(account_id: int) -> str:
    return f"cus_bench_{account_id}"


@dataclass
class Expected:
    """What the database must hold: credits per account, status per subscription, grants."""

    credits: dict[int, Decimal] = field(default_factory=dict)
    statuses: dict[str, str] = field(default_factory=dict)
    grants: int = 0
    skipped: int = 0

    def add(self, account_id: int, amount: Decimal) -> None:
        self.credits[account_id] = self.credits.get(account_id, Decimal(0)) + amount


class Subscriptions:
    """A small model of Stripe's subscription rules (docs/billing.md), for the events the mix
    sends: each event of a subscription a later second than the one before. The deciding
    object is the newest one, unless one held is final; a renewal invoice newer than it
    makes incomplete/past_due/unpaid `active` (paid) or active/past_due `past_due` (failed)."""

    FINAL = ("canceled", "incomplete_expired")

    def __init__(self) -> None:
        self.objects: dict[str, tuple[str, int]] = {}
        self.invoices: dict[str, tuple[str, int]] = {}

    def take_object(self, sub: str, status: str, at: int) -> None:
        held = self.objects.get(sub)
        if held is None or held[0] not in self.FINAL:
            self.objects[sub] = (status, at)

    def take_invoice(self, sub: str, paid: bool, at: int) -> None:
        self.invoices[sub] = ("paid" if paid else "failed", at)

    def status(self, sub: str) -> str:
        status, at = self.objects.get(sub, ("incomplete", -1))
        if status in self.FINAL:
            return status
        invoice, invoice_at = self.invoices.get(sub, (None, -1))
        if invoice is not None and invoice_at > at:
            if invoice == "paid" and status in ("incomplete", "past_due", "unpaid"):
                return "active"
            if invoice == "failed" and status in ("active", "past_due"):
                return "past_due"
        return status


class Workload:
    """Builds one run's requests (ids prefixed by `run`) and adds their effects to `expected`."""

    def __init__(self, run: str, expected: Expected, seed_value: int = 17) -> None:
        self.run, self.expected = run, expected
        self.random = random.Random(seed_value)
        self.clock = int(time.time()) - 200_000  # each Stripe event one second after the last
        self.n = 0
        self.subscriptions = Subscriptions()
        self.created: list[str] = []
        self.open_pulls: list[tuple[int, int]] = []
        self.refundable: list[tuple[int, str]] = []

    def _next(self) -> tuple[str, int]:
        self.n += 1
        self.clock += 1
        return f"evt_{self.run}_{self.n}", self.clock

    def bench_checkouts(self, count: int) -> list[Request]:
        requests = []
        for n in range(count):
            body = purchase_body(self.run, n)
            requests.append(Request("/webhooks/stripe", body, {"Content-Type": "application/json"}))
            self.expected.add(1 + n % ACCOUNTS, Decimal(PACKS["price_pro"]))
            self.expected.grants += 1
        return requests

    def checkout(
        self,
        account_id: int | None = None,
        lines: list[tuple[str, int]] | None = None,
        payment_intent: str | None = None,
        in_metadata: bool | None = None,
    ) -> Request:
        """A paid checkout of a realistic shape (see the module doc)."""
        r = self.random
        event_id, created = self._next()
        account_id = account_id or r.randint(1, INSTALLED)
        if lines is None:
            if r.random() < 0.8:
                lines = [(r.choice(list(PACKS)), 1)]
                in_metadata = True
            else:
                lines = [(r.choice(list(PACKS)), 2 if r.random() < 0.25 else 1)]
                if r.random() < 0.2:
                    lines.append((r.choice([p for p in PACKS if p != lines[0][0]]), 1))
                in_metadata = False
        obj: dict[str, Any] = {
            "id": f"cs_{event_id}",
            "object": "checkout.session",
            "mode": "payment",
            "payment_status": "paid",
            "status": "complete",
            "customer": customer(account_id),
            "payment_intent": payment_intent or f"pi_{event_id}",
            "amount_total": CHARGE,
            "currency": "eur",
            "metadata": {},
        }
        if r.random() < 0.7:
            obj["client_reference_id"] = str(account_id)
        else:
            obj["metadata"]["github_account_id"] = str(account_id)
        if in_metadata:
            obj["metadata"]["credit_pack"] = lines[0][0]
        else:
            obj["line_items"] = {
                "object": "list",
                "has_more": False,
                "data": [
                    {"price": {"id": price}, "quantity": quantity} for price, quantity in lines
                ],
            }
        for price, quantity in lines:
            self.expected.add(account_id, Decimal(PACKS[price] * quantity))
        self.expected.grants += 1
        return stripe_request(event_id, "checkout.session.completed", obj, created)

    def checkouts(self, count: int) -> list[Request]:
        return [self.checkout() for _ in range(count)]

    def refundable_purchases(self, count: int) -> list[Request]:
        """Purchases made before timing, each refunded by half in the mix."""
        requests = []
        for k in range(count):
            account_id = self.random.randint(1, INSTALLED)
            payment_intent = f"pi_{self.run}_refundable_{k}"
            requests.append(self.checkout(account_id, [(REFUNDED_PACK, 1)], payment_intent, True))
            self.refundable.append((account_id, payment_intent))
        return requests

    def mix(self, count: int) -> list[Request]:
        kinds = self.random.choices(list(MIX), weights=list(MIX.values()), k=count)
        return [getattr(self, f"_{kind}")() for kind in kinds]

    def _checkout(self) -> Request:
        return self.checkout()

    def _stripe_unhandled(self) -> Request:
        event_id, created = self._next()
        account_id = self.random.randint(1, INSTALLED)
        event_type, obj = self.random.choice(
            [
                ("payment_intent.succeeded", {"id": f"pi_{event_id}", "object": "payment_intent"}),
                (
                    "charge.succeeded",
                    {
                        "id": f"ch_{event_id}",
                        "object": "charge",
                        "payment_intent": f"pi_{event_id}",
                    },
                ),
                ("customer.updated", {"id": customer(account_id), "object": "customer"}),
            ]
        )
        self.expected.skipped += 1
        return stripe_request(event_id, event_type, obj, created)

    def _refund(self) -> Request:
        if not self.refundable:
            return self._checkout()
        account_id, payment_intent = self.refundable.pop()
        event_id, created = self._next()
        charge = {
            "id": f"ch_{payment_intent}",
            "object": "charge",
            "payment_intent": payment_intent,
            "amount": CHARGE,
            "amount_refunded": CHARGE // 2,
            "refunded": False,
        }
        self.expected.add(account_id, -Decimal(PACKS[REFUNDED_PACK]) / 2)
        return stripe_request(event_id, "charge.refunded", charge, created)

    def _subscription_object(self, sub: str, status: str) -> dict[str, Any]:
        account_id = 1 + int(sub.rsplit("_", 1)[1]) % INSTALLED
        return {
            "id": sub,
            "object": "subscription",
            "status": status,
            "customer": customer(account_id),
            "metadata": {"github_account_id": str(account_id)},
            "items": {
                "data": [
                    {"price": {"id": "price_team"}, "current_period_end": self.clock + 30 * 86400}
                ]
            },
            "cancel_at_period_end": False,
        }

    def _subscription(self) -> Request:
        sub = f"sub_{self.run}_{self.random.randrange(SUBSCRIPTIONS)}"
        event_id, created = self._next()
        if sub not in self.subscriptions.objects:
            event_type, status = "customer.subscription.created", "active"
            self.created.append(sub)
        else:
            status = self.random.choices(
                ["active", "past_due", "unpaid", "canceled"], weights=[6, 2, 1, 0.3]
            )[0]
            event_type = "customer.subscription.updated"
            if status == "canceled" and self.random.random() < 0.5:
                event_type = "customer.subscription.deleted"
        self.subscriptions.take_object(sub, status, created)
        return stripe_request(event_id, event_type, self._subscription_object(sub, status), created)

    def _invoice(self) -> Request:
        if not self.created:
            return self._subscription()
        sub = self.random.choice(self.created)
        event_id, created = self._next()
        paid = self.random.random() < 0.7
        account_id = 1 + int(sub.rsplit("_", 1)[1]) % INSTALLED
        invoice = {
            "id": f"in_{event_id}",
            "object": "invoice",
            "subscription": sub,
            "customer": customer(account_id),
            "billing_reason": "subscription_cycle",
            "status": "paid" if paid else "open",
            "subscription_details": {"metadata": {"github_account_id": str(account_id)}},
        }
        self.subscriptions.take_invoice(sub, paid, created)
        event_type = "invoice.paid" if paid else "invoice.payment_failed"
        return stripe_request(event_id, event_type, invoice, created)

    def _repositories(self) -> Request:
        account_id = self.random.randint(1, INSTALLED)
        added = self.random.random() < 0.6
        repository = _repository(account_id, self.random.randint(1, 20))
        payload = {
            "action": "added" if added else "removed",
            "installation": _installation(account_id),
            "repository_selection": "selected",
            "repositories_added": [repository] if added else [],
            "repositories_removed": [] if added else [repository],
            "sender": _account(account_id),
        }
        return github_request("installation_repositories", payload)

    def _github_stored(self) -> Request:
        r = self.random
        account_id = r.randint(1, INSTALLED)
        common = {
            "installation": {"id": INSTALLATION + account_id},
            "repository": _repository(account_id, r.randint(0, 20)),
            "sender": _account(account_id),
        }
        event = r.choice(STORED_ONLY)
        self.expected.skipped += 1
        if event == "push":
            return github_request(
                "push",
                {"ref": "refs/heads/main", "after": uuid.uuid4().hex, "commits": [], **common},
            )
        if event == "pull_request":
            if self.open_pulls and r.random() < 0.6:
                index = r.randrange(len(self.open_pulls))
                pull, stage = self.open_pulls[index]
                action = "closed" if stage >= 1 and r.random() < 0.5 else "synchronize"
                if action == "closed":
                    self.open_pulls.pop(index)
                else:
                    self.open_pulls[index] = (pull, stage + 1)
            else:
                pull, action = self.n * 10 + r.randrange(10), "opened"
                self.n += 1
                self.open_pulls.append((pull, 0))
            return github_request(
                "pull_request",
                {
                    "action": action,
                    "number": pull % 100_000,
                    "pull_request": {"id": pull},
                    **common,
                },
            )
        action = {"issues": "opened", "issue_comment": "created"}.get(event, "completed")
        return github_request(
            event, {"action": action, event: {"id": r.randrange(10**9)}, **common}
        )

    def finish(self) -> None:
        for sub in self.subscriptions.objects:
            self.expected.statuses[sub] = self.subscriptions.status(sub)
