"""The work the processing benchmarks give the service: credit-pack purchases.

Each event is a signed Stripe `checkout.session.completed` (paid) naming a pack of the seed
catalog in its metadata and an existing account, so applying it is a real ledger grant:
the pack looked up, the purchase recorded once per session, the credits added.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from sqlalchemy import Engine, func, select

from bench.loadgen import build_request
from domain.account_opening import ensure_account
from domain.ledger_tables import CreditEntry
from domain.packs import load_packs, read_pack_file
from ingress.signatures import stripe_signature
from ingress.stripe import stripe_event
from outbox import store
from outbox.db import make_sessionmaker, transaction

ROOT = Path(__file__).resolve().parents[1]
SEED_PACKS = ROOT / "examples" / "packs.toml"
STRIPE_SECRET = "whsec_bench_secret"
PACK = "price_pro"  #: the pack every benchmark purchase buys (85 credits)
ACCOUNTS = 1000  #: accounts the purchases are spread over (ids 1..ACCOUNTS)
WELCOME_CREDITS = Decimal(50)  #: each account's welcome grant, as WELCOME_CREDITS defaults to
RECORD_BATCH = 2000  #: rows per insert when a backlog is stored directly


def purchase_body(run: str, n: int, *, created: int | None = None) -> bytes:
    """Event `n` of run `run`: a paid checkout session for the Pro pack."""
    session_id = f"cs_{run}_{n}"
    event = {
        "id": f"evt_{run}_{n}",
        "object": "event",
        "type": "checkout.session.completed",
        "livemode": False,
        "created": created or int(time.time()),
        "api_version": "2024-06-20",
        "data": {
            "object": {
                "id": session_id,
                "object": "checkout.session",
                "mode": "payment",
                "payment_status": "paid",
                "status": "complete",
                "client_reference_id": str(1 + n % ACCOUNTS),
                "customer": None,
                "payment_intent": f"pi_{run}_{n}",
                "amount_total": 1499,
                "currency": "eur",
                "metadata": {"credit_pack": PACK},
            }
        },
    }
    return json.dumps(event, separators=(",", ":")).encode()


def signed_stripe(port: int, body: bytes) -> bytes:
    """The whole HTTP request that delivers the Stripe event `body`, signed now, to `port`."""
    headers = {
        "Content-Type": "application/json",
        "Stripe-Signature": stripe_signature(STRIPE_SECRET, body, int(time.time())),
    }
    return build_request("127.0.0.1", port, "/webhooks/stripe", body, headers)


def signed_purchase(port: int, run: str, n: int) -> bytes:
    """The whole HTTP request that delivers purchase `n` to an ingress on `port`."""
    return signed_stripe(port, purchase_body(run, n))


def signed_purchases(port: int, run: str, start: int, count: int) -> list[bytes]:
    return [signed_purchase(port, run, n) for n in range(start, start + count)]


def seed(engine: Engine) -> None:
    """The seed pack catalog and the accounts the purchases name, each with its welcome grant
    as in a running service, and the planner's statistics of those tables."""
    sessions = make_sessionmaker(engine)
    now = datetime.now(UTC)
    with transaction(sessions) as session:
        load_packs(session, read_pack_file(SEED_PACKS), now=now)
        for account_id in range(1, ACCOUNTS + 1):
            ensure_account(session, account_id, login=f"bench{account_id}", kind="User",
                           now=now, welcome_credits=WELCOME_CREDITS)  # fmt: skip
    with engine.begin() as conn:
        # A fresh database's tables have no statistics, and the planner takes them for
        # tiny; autovacuum gathers them within a minute of the first writes.
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("ANALYZE")


def store_backlog(engine: Engine, run: str, count: int) -> None:
    """`count` purchases stored as the ingress stores them (pending, due now), not rung."""
    for start in range(0, count, RECORD_BATCH):
        batch = [
            stripe_event(purchase_body(run, n), {}, "stripe#0", "any")
            for n in range(start, min(count, start + RECORD_BATCH))
        ]
        with engine.begin() as conn:
            store.record(conn, batch, datetime.now(UTC))
    with engine.begin() as conn:
        # What autovacuum does within a minute of such a burst; before that the planner has
        # no statistics for a table that was empty, and may plan claims for an empty table.
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("ANALYZE webhook_events")


def grants(engine: Engine) -> tuple[int, int]:
    """(pack grants in the ledger, credits in them): N purchases of the Pro pack must be
    (N, 85 N)."""
    with engine.connect() as conn:
        count, total = conn.execute(
            select(func.count(), func.coalesce(func.sum(CreditEntry.amount), 0)).where(
                CreditEntry.key.like("pack:%")
            )
        ).one()
    return int(count), int(total)


def chunks(total: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, total, size):
        yield start, min(size, total - start)
