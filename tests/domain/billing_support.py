"""Stripe events for billing tests, built on the corpus's Stripe objects, and a way to deliver
them to a handler as the processors would: prepare outside, apply inside one transaction;
and accounts opened for the credit ledger's tests."""

from __future__ import annotations

import copy
import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from domain.account_opening import ensure_account
from domain.accounts import Account
from domain.handlers import handler_table
from domain.packs import load_packs, read_pack_file
from outbox.db import transaction
from outbox.handling import EventContext, HandlerTable
from outbox.settings import Settings
from tests.conftest import CORPUS

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
STRIPE_BASE = "https://stripe.test"
SEED_PACKS = Path(__file__).resolve().parents[2] / "examples" / "packs.toml"
#: The seed catalog's price ids and the credits each buys.
DECOUVERTE, PRO, ORGANISME = "price_decouverte", "price_pro", "price_organisme"
PACK_CREDITS = {DECOUVERTE: Decimal(25), PRO: Decimal(85), ORGANISME: Decimal(250)}
PACK_CENTS = {DECOUVERTE: 499, PRO: 1499, ORGANISME: 3999}


@cache
def _corpus_object(name: str) -> dict[str, Any]:
    path = CORPUS / "stripe" / "objects" / f"{name}.json"
    if path.exists():
        return json.loads(path.read_text())
    # Objects not extracted to objects/ (a charge, a line item) come from the same fixtures.
    return json.loads((CORPUS / "stripe" / "fixtures3.json").read_text())["resources"][name]


def corpus(name: str, **changes: Any) -> dict[str, Any]:
    """A copy of the corpus's Stripe object `name`, with top-level fields changed."""
    obj = copy.deepcopy(_corpus_object(name))
    obj.update(changes)
    return obj


def checkout_session(
    account_id: int | str | None,
    *,
    session_id: str | None = None,
    pack: str | None = None,
    payment_status: str = "paid",
    customer: str | None = None,
    payment_intent: str | None = None,
    **changes: Any,
) -> dict[str, Any]:
    session_id = session_id or f"cs_test_{uuid.uuid4().hex}"
    return corpus(
        "checkout.session",
        id=session_id,
        client_reference_id=None if account_id is None else str(account_id),
        metadata={"credit_pack": pack} if pack else {},
        payment_status=payment_status,
        status="complete" if payment_status == "paid" else "open",
        customer=customer,
        payment_intent=payment_intent or f"pi_{session_id}",
        amount_total=PACK_CENTS.get(pack or "", 499),
        currency="eur",
        **changes,
    )


def line_item(price_id: str, quantity: int = 1) -> dict[str, Any]:
    item = corpus("item", quantity=quantity)
    item["price"] = dict(item["price"], id=price_id, type="one_time", recurring=None)
    return item


def charge(
    payment_intent: str, amount: int, amount_refunded: int, **changes: Any
) -> dict[str, Any]:
    return corpus(
        "charge",
        id=f"ch_{payment_intent}",
        payment_intent=payment_intent,
        amount=amount,
        amount_captured=amount,
        amount_refunded=amount_refunded,
        refunded=amount_refunded >= amount,
        captured=True,
        **changes,
    )


def dispute(
    payment_intent: str, amount: int, status: str, *, dispute_id: str = "dp_test_1", **changes: Any
) -> dict[str, Any]:
    """A Stripe dispute of the payment's charge (`status`: a dispute object's status)."""
    return corpus(
        "dispute", id=dispute_id, charge=f"ch_{payment_intent}", payment_intent=payment_intent,
        amount=amount, status=status, **changes,
    )  # fmt: skip


def subscription_object(
    customer: str, status: str, *, sub_id: str = "sub_1Pgc6rB7WZ01zgkWNy0Cn5nw",
    price: str = "price_monthly", period_end: int = 1_800_000_000,
    cancel_at_period_end: bool = False, metadata: dict[str, str] | None = None,
) -> dict[str, Any]:  # fmt: skip
    obj = corpus(
        "subscription",
        id=sub_id,
        customer=customer,
        status=status,
        cancel_at_period_end=cancel_at_period_end,
        metadata=metadata or {},
    )
    item = obj["items"]["data"][0]
    item["price"] = dict(item["price"], id=price)
    item["current_period_end"] = period_end
    item["subscription"] = sub_id
    return obj


def invoice_object(
    customer: str, sub_id: str, *, billing_reason: str = "subscription_cycle"
) -> dict[str, Any]:
    obj = corpus(
        "invoice", id=f"in_{uuid.uuid4().hex[:16]}", customer=customer,
        billing_reason=billing_reason, subscription=None,
    )  # fmt: skip
    obj["parent"] = {
        "type": "subscription_details",
        "quote_details": None,
        "subscription_details": {"metadata": {}, "subscription": sub_id},
    }
    return obj


_ids = iter(range(1, 10**9))


def stripe_event(
    event_type: str,
    obj: dict[str, Any],
    *,
    created: int = 1_780_000_000,
    delivery_id: str | None = None,
    attempts: int = 1,
) -> EventContext:
    """An EventContext around `obj`, as the processors would hand it to a handler."""
    delivery_id = delivery_id or f"evt_{uuid.uuid4().hex[:24]}"
    payload = {
        "id": delivery_id,
        "object": "event",
        "api_version": "2024-06-20",
        "created": created,
        "data": {"object": obj},
        "livemode": False,
        "type": event_type,
    }
    return EventContext(
        id=next(_ids),
        source="stripe",
        delivery_id=delivery_id,
        event_type=event_type,
        payload=payload,
        livemode=False,
        provider_created_at=datetime.fromtimestamp(created, UTC),
        installation_id=None,
        stripe_account=None,
        account_id=None,
        attempts=attempts,
        backfilled=False,
        now=NOW,
    )


def billing_settings(database_url: str, **changes: Any) -> Settings:
    return Settings(database_url=database_url, stripe_api_base=STRIPE_BASE, **changes)


def deliver(sessions: sessionmaker[Session], table: HandlerTable, event: EventContext) -> None:
    """Apply one event the way the processors do: prepare outside, apply in a transaction."""
    handler = table[(event.source, event.event_type)]
    prepared = handler.prepare(event) if handler.prepare else None
    with transaction(sessions) as session:
        handler.apply(session, event, prepared)


def bought_pro(sessions: sessionmaker[Session], table: HandlerTable, account_id: int = 1) -> str:
    """A paid Checkout of the Pro pack for the account, delivered; its payment intent."""
    obj = checkout_session(account_id, pack=PRO)
    deliver(sessions, table, stripe_event("checkout.session.completed", obj))
    return str(obj["payment_intent"])


def seed(sessions: sessionmaker[Session], *account_ids: int, welcome: str = "0") -> None:
    """The seed pack catalog, and these accounts (no welcome grant unless asked)."""
    with transaction(sessions) as session:
        load_packs(session, read_pack_file(SEED_PACKS), now=NOW)
        for account_id in account_ids:
            ensure_account(
                session, account_id, login=f"acct{account_id}", now=NOW,
                welcome_credits=Decimal(welcome),
            )  # fmt: skip


def new_account(
    sessions: sessionmaker[Session], account_id: int = 1, *, welcome: str = "0",
    login: str = "octocat",
) -> Account:  # fmt: skip
    """A `User` account opened with `welcome` credits (its welcome grant)."""
    with transaction(sessions) as s:
        account, _ = ensure_account(
            s, account_id, login=login, kind="User", now=NOW, welcome_credits=Decimal(welcome)
        )
    return account


def table_for(database_url: str, **changes: Any) -> HandlerTable:
    return handler_table(billing_settings(database_url, **changes))
