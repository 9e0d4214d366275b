"""Realistic credit-pack checkouts, shaped like what Stripe sends for real customers.

Every session has a Stripe customer; 70 % name the account by `client_reference_id` and
30 % by `metadata.github_account_id`; 80 % name the pack in `metadata.credit_pack` and
20 % only through the line items the event carries (a quarter of those with quantity 2);
the packs are spread over the whole seed catalog. Deterministic in `n`, so a run can be
checked and repeated.
"""

from __future__ import annotations

import json
import time
from typing import Any

from bench.workload import ACCOUNTS, signed_stripe

#: The seed catalog's price ids (examples/packs.toml).
CATALOG = ("price_decouverte", "price_pro", "price_organisme")


def checkout_body(run: str, n: int) -> bytes:
    """Checkout `n` of run `run`: a paid session of one of the shapes above."""
    account = str(1 + n % ACCOUNTS)
    pack = CATALOG[(n // 7) % len(CATALOG)]
    session: dict[str, Any] = {
        "id": f"cs_{run}_{n}",
        "object": "checkout.session",
        "mode": "payment",
        "payment_status": "paid",
        "status": "complete",
        "customer": f"cus_bench_{account}",
        "payment_intent": f"pi_{run}_{n}",
        "amount_total": 1499,
        "currency": "eur",
        "metadata": {},
    }
    if n % 10 < 7:
        session["client_reference_id"] = account
    else:
        session["metadata"]["github_account_id"] = account
    if n % 5 != 0:
        session["metadata"]["credit_pack"] = pack
    else:
        quantity = 2 if n % 20 == 0 else 1
        session["line_items"] = {
            "object": "list",
            "has_more": False,
            "data": [{"object": "item", "price": {"id": pack}, "quantity": quantity}],
        }
    event = {
        "id": f"evt_{run}_{n}",
        "object": "event",
        "type": "checkout.session.completed",
        "livemode": False,
        "created": int(time.time()),
        "api_version": "2024-06-20",
        "data": {"object": session},
    }
    return json.dumps(event, separators=(",", ":")).encode()


def signed_checkouts(port: int, run: str, start: int, count: int) -> list[bytes]:
    """The whole HTTP requests that deliver checkouts start..start+count to `port`."""
    return [signed_stripe(port, checkout_body(run, n)) for n in range(start, start + count)]
