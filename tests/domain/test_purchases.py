"""Credit pack grants: many checkout sessions at once write what one at a time writes."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from domain import purchases
from domain.account_opening import ensure_account
from domain.accounts import UnknownAccount
from domain.packs import load_packs, read_pack_file
from domain.purchases import Checkout, CreditPurchase, LineItem, PackGrant, UnknownPack
from outbox.db import transaction

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
SEED_PACKS = Path(__file__).resolve().parents[2] / "examples" / "packs.toml"


def _purchases(session, suffix):
    rows = session.scalars(
        select(CreditPurchase)
        .where(CreditPurchase.checkout_session_id.like(f"%{suffix}"))
        .order_by(CreditPurchase.id)
    )
    return [
        (r.checkout_session_id.removesuffix(suffix), r.account_id, r.description, r.credits,
         r.payment_intent_id, r.stripe_customer_id, r.amount_total, r.currency,
         r.refunded_amount, r.refunded_credits, r.event_id, r.created_at)
        for r in rows
    ]  # fmt: skip


def _grants(suffix):
    def checkout(name, account_id, *lines):
        return Checkout(f"cs_{name}{suffix}", account_id, tuple(lines), payment_intent_id=None,
                        stripe_customer_id="cus_1", amount_total=1499, currency="eur")  # fmt: skip

    return [
        PackGrant(checkout("a", 1, LineItem("price_pro")), event_id=7),
        PackGrant(checkout("b", 2, LineItem("price_pro", 2), LineItem("price_decouverte"))),
        PackGrant(checkout("a", 1, LineItem("price_pro")), event_id=8),  # a repeat
        PackGrant(checkout("c", 1, LineItem("price_unknown"))),
        PackGrant(checkout("d", 99, LineItem("price_pro"))),  # no such account
    ]


def test_grant_packs_writes_exactly_what_grant_pack_writes_one_session_at_a_time(sessions):
    with transaction(sessions) as s:
        load_packs(s, read_pack_file(SEED_PACKS), now=NOW)
        for account_id in (1, 2):
            ensure_account(s, account_id, login=f"u{account_id}", kind="User", now=NOW,
                           welcome_credits=0)  # fmt: skip
    one_by_one = []
    for grant in _grants("-one"):
        try:
            with transaction(sessions) as s:
                one_by_one.append(
                    purchases.grant_pack(s, grant.checkout, now=NOW, event_id=grant.event_id)
                )
        except (UnknownPack, UnknownAccount) as exc:
            one_by_one.append(exc)
    with transaction(sessions) as s:
        together = purchases.grant_packs(s, _grants("-many"), now=NOW)
    assert [type(r) for r in together] == [type(r) for r in one_by_one]
    assert [r.credits for r in together if isinstance(r, purchases.Granted)] == [85, 195]
    with transaction(sessions) as s:
        assert _purchases(s, "-many") == _purchases(s, "-one")
        assert len(_purchases(s, "-many")) == 2
