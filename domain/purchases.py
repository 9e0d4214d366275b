"""Credit pack purchases: a paid checkout session grants its packs once; a refund takes back
its share once.

One `credit_purchases` row per checkout session, written in the same transaction as its
ledger entry (key `pack:<checkout session id>`), whichever of `checkout.session.completed`
or `checkout.session.async_payment_succeeded` comes first, however often either comes.

Refunds are cumulative: Stripe's `charge.refunded` carries the charge's total
`amount_refunded` so far. The credits to take back are that share of what the purchase
granted, less what earlier refunds already took; so a duplicate, or an older refund event
arriving after a newer one, takes nothing more. What the account no longer has becomes
debt (see domain/ledger.py), never a negative balance.

Refunds and disputes (domain/disputes.py) of one payment together never take back more
than the purchase granted: a purchase has taken back `min(credits, refunded_credits +
disputed_credits)`, and each refund or dispute event writes only the change of that
figure (taken back from what is available, the rest as debt; or, when a dispute is won,
given back as a credit, which pays debt first).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, NamedTuple

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    String,
    Table,
    UniqueConstraint,
    select,
    text,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from domain import account_locks, balances, ledger
from domain.accounts import UnknownAccount
from domain.credits import QUANTUM, Credits, format_credits
from domain.packs import CreditPack
from outbox.session import Base, BigId, Query, UTCDateTime, insert_all, write_over

#: Ledger key of a checkout session's grant.
PACK_KEY = "pack:{session_id}"
#: Ledger key of one refund state of a charge (its cumulative refunded amount).
REFUND_KEY = "refund:{charge_id}:{amount_refunded}"


class UnknownPack(LookupError):
    """A checkout line names a price that is not in the pack catalog."""


class CreditPurchase(Base):
    __tablename__ = "credit_purchases"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    checkout_session_id: Mapped[str] = mapped_column(String(255))
    account_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("accounts.id"))
    #: What was bought, as granted: "Pro x2" and the credits that came with it.
    description: Mapped[str] = mapped_column(String(255))
    credits: Mapped[Decimal] = mapped_column(Credits())
    payment_intent_id: Mapped[str | None] = mapped_column(String(255), index=True)
    stripe_customer_id: Mapped[str | None] = mapped_column(String(255))
    #: What the customer paid, in the currency's minor unit (64-bit: an IDR-sized order
    #: passes 2**31).
    amount_total: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(3))
    #: Refunds so far: the charge's cumulative refunded amount, and the credits it took back.
    refunded_amount: Mapped[int] = mapped_column(BigInteger, default=0)
    refunded_credits: Mapped[Decimal] = mapped_column(Credits(), default=Decimal(0))
    #: The credits its disputes hold taken back now (domain/disputes.py).
    disputed_credits: Mapped[Decimal] = mapped_column(
        Credits(), default=Decimal(0), server_default=text("0")
    )
    event_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        UniqueConstraint("checkout_session_id", name="uq_credit_purchases_checkout_session"),
    )

    @property
    def taken_back(self) -> Decimal:
        """What refunds and disputes take back of this purchase now: never more than it gave."""
        return min(self.credits, self.refunded_credits + self.disputed_credits)


_purchases: Table = CreditPurchase.__table__  # type: ignore[assignment]


@dataclass(frozen=True)
class LineItem:
    """One line of a checkout session: a Stripe price, bought `quantity` times."""

    price_id: str
    quantity: int = 1


@dataclass(frozen=True)
class Checkout:
    """A paid checkout session, as the grant needs it."""

    session_id: str
    account_id: int
    lines: tuple[LineItem, ...]
    payment_intent_id: str | None = None
    stripe_customer_id: str | None = None
    amount_total: int | None = None
    currency: str | None = None


@dataclass(frozen=True)
class Refund:
    """A charge's refund state: of `amount` charged, `amount_refunded` so far."""

    charge_id: str
    payment_intent_id: str
    amount: int
    amount_refunded: int


@dataclass(frozen=True)
class PackGrant:
    """One paid checkout session to grant, and the event that reports it."""

    checkout: Checkout
    event_id: int | None = None


@dataclass(frozen=True)
class Granted:
    """A checkout session granted now: its account, its packs and the credits they gave."""

    session_id: str
    account_id: int
    description: str
    credits: Decimal


#: What became of one PackGrant: granted now, None when the session was granted before,
#: or why it could not be granted (it wrote nothing then).
GrantResult = Granted | None | UnknownPack | UnknownAccount


def grant_pack(
    session: Session, checkout: Checkout, *, now: datetime, event_id: int | None = None
) -> Granted | None:
    """Credit the packs a paid checkout session bought; None when it was already granted."""
    [result] = grant_packs(session, [PackGrant(checkout, event_id)], now=now)
    if isinstance(result, Exception):
        raise result
    return result


def grant_packs(
    session: Session, grants: Sequence[PackGrant], *, now: datetime
) -> list[GrantResult]:
    """`grant_pack` for many checkout sessions at once, a few statements for all of them.

    The accounts are locked first (all of them, in id order); each grant is priced from
    the catalog and credited under its key `pack:<session id>`, which the ledger applies
    once: a session whose key is there already was granted before, and gets no second
    `credit_purchases` row. A grant whose account is missing, or whose price the catalog
    lacks (unless it was granted before), writes nothing and says why in its place.
    """
    accounts = account_locks.lock_accounts(session, (g.checkout.account_id for g in grants))
    prices = (line.price_id for grant in grants for line in grant.checkout.lines)
    catalog = packs_for_prices(session, prices)
    results: list[GrantResult] = [None] * len(grants)
    priced: list[tuple[int, dict[str, Any], ledger.NewCredit]] = []
    unpriced: list[tuple[int, UnknownPack, str]] = []
    for index, grant in enumerate(grants):
        checkout = grant.checkout
        if checkout.account_id not in accounts:
            results[index] = UnknownAccount(f"no account with id {checkout.account_id}")
            continue
        try:
            bought = _priced(checkout.lines, catalog)
        except UnknownPack as exc:
            unpriced.append((index, exc, PACK_KEY.format(session_id=checkout.session_id)))
            continue
        priced.append((index, *_purchase(grant, bought, now)))
    if unpriced:  # a price gone from the catalog does not matter to a session granted before
        granted_before = balances.applied_keys(session, (key for _, _, key in unpriced))
        for index, refusal, key in unpriced:
            results[index] = None if key in granted_before else refusal
    entries = ledger.credit_many(session, [credit for _, _, credit in priced], now=now)
    written = []
    for (index, purchase, credit), entry in zip(priced, entries, strict=True):
        if entry is not None:  # None: the key was there, the session was granted before
            written.append(purchase)
            results[index] = Granted(
                purchase["checkout_session_id"],
                credit.account_id,
                purchase["description"],
                credit.amount,
            )
    insert_all(session, _purchases, written)
    return results


class PackPrice(NamedTuple):
    """What a grant reads of a catalog pack."""

    price_id: str
    name: str
    credits: Decimal


def packs_for_prices(session: Session, price_ids: Iterable[str]) -> dict[str, PackPrice]:
    """The catalog's packs for these prices, on sale or retired, by price id.

    Plain rows, not CreditPack entities: loading entities into the session cost a fifth
    of a batch's Python, for the three fields a grant reads."""
    wanted = set(price_ids)
    if not wanted:
        return {}
    found = _PACKS_FOR_PRICES.rows(session, prices=sorted(wanted))
    return {row[0]: PackPrice(*row) for row in found}


_packs: Table = CreditPack.__table__  # type: ignore[assignment]


#: The catalog's pack of each of the prices `prices` that has one.
_PACKS_FOR_PRICES = Query(
    lambda one_of: select(_packs.c.price_id, _packs.c.name, _packs.c.credits).where(
        one_of(_packs.c.price_id, "prices")
    )
)


def _priced(
    lines: tuple[LineItem, ...], catalog: dict[str, PackPrice]
) -> list[tuple[PackPrice, int]]:
    """The pack of each line; UnknownPack naming every price the catalog lacks."""
    missing = sorted({line.price_id for line in lines if line.price_id not in catalog})
    if missing or not lines:
        raise UnknownPack(
            "no credit pack for price " + ", ".join(missing) if missing else "no line items"
        )
    return [(catalog[line.price_id], line.quantity) for line in lines]


def _purchase(
    grant: PackGrant, bought: list[tuple[PackPrice, int]], now: datetime
) -> tuple[dict[str, Any], ledger.NewCredit]:
    """The `credit_purchases` row and the ledger credit of one priced checkout session."""
    checkout = grant.checkout
    credits = sum((pack.credits * quantity for pack, quantity in bought), Decimal(0))
    description = ", ".join(
        pack.name if quantity == 1 else f"{pack.name} x{quantity}" for pack, quantity in bought
    )
    purchase = {
        "checkout_session_id": checkout.session_id,
        "account_id": checkout.account_id,
        "description": description[:255],
        "credits": credits,
        "payment_intent_id": checkout.payment_intent_id,
        "stripe_customer_id": checkout.stripe_customer_id,
        "amount_total": checkout.amount_total,
        "currency": checkout.currency,
        "refunded_amount": 0,
        "refunded_credits": Decimal(0),
        "disputed_credits": Decimal(0),
        "event_id": grant.event_id,
        "created_at": now,
    }
    credit = ledger.NewCredit(
        checkout.account_id,
        credits,
        key=PACK_KEY.format(session_id=checkout.session_id),
        reason=f"pack {description} ({checkout.session_id})"[:255],
        event_id=grant.event_id,
    )
    return purchase, credit


def purchase_for_session(session: Session, session_id: str) -> CreditPurchase | None:
    return session.execute(
        select(CreditPurchase).where(CreditPurchase.checkout_session_id == session_id)
    ).scalar_one_or_none()


def purchase_for_payment(session: Session, payment_intent_id: str) -> CreditPurchase | None:
    return session.execute(
        select(CreditPurchase).where(CreditPurchase.payment_intent_id == payment_intent_id)
    ).scalar_one_or_none()


def purchases_for_payments(
    session: Session, payment_intent_ids: Iterable[str]
) -> dict[str, CreditPurchase]:
    """The purchases these payments made, by payment intent, read in one statement."""
    wanted = sorted(set(payment_intent_ids))
    if not wanted:
        return {}
    rows = session.scalars(
        select(CreditPurchase)
        .where(CreditPurchase.payment_intent_id.in_(wanted))
        .execution_options(populate_existing=True)  # as they are now, not as once read
    )
    return {row.payment_intent_id: row for row in rows if row.payment_intent_id is not None}


def refunded_share(purchase: CreditPurchase, refund: Refund) -> Decimal:
    """The credits a refund state stands for: the refunded fraction of what was granted."""
    if refund.amount <= 0:
        return Decimal(0)
    fraction = Decimal(min(refund.amount_refunded, refund.amount)) / Decimal(refund.amount)
    return (purchase.credits * fraction).quantize(QUANTUM, rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class RefundState:
    """A charge's refund state, and the purchase it paid for (see `take_back_refunds`)."""

    purchase: CreditPurchase
    refund: Refund
    event_id: int | None = None


def take_back_refunds(
    session: Session, states: Sequence[RefundState], *, now: datetime, read_locked: bool = False
) -> None:
    """Take back what each refund state adds to the earlier ones of its purchase (nothing
    for an older or repeated state, or credits a dispute of the payment already took
    back), in the order given, each seeing the purchase as the one before left it: the
    purchases' accounts locked, the purchases read again under their locks (unless they
    were read while the transaction held those locks already: `read_locked`), the
    purchases' refund columns written back in one statement, the entries with a few
    whatever their number (ledger.take_back_many)."""
    if not states:
        return
    account_locks.lock_accounts(session, (state.purchase.account_id for state in states))
    if not read_locked:
        ids = sorted({state.purchase.id for state in states})
        session.scalars(
            select(CreditPurchase)
            .where(CreditPurchase.id.in_(ids))
            .execution_options(populate_existing=True)
        ).all()
    more = [refund_take_back(s.purchase, s.refund, event_id=s.event_id) for s in states]
    purchases = {id(state.purchase): state.purchase for state in states}.values()
    changed = [row for row in purchases if session.is_modified(row)]
    write_over(session, _purchases, changed, ("refunded_amount", "refunded_credits"))
    ledger.take_back_many(session, [item for item in more if item is not None], now=now)


def refund_take_back(
    purchase: CreditPurchase, refund: Refund, *, event_id: int | None
) -> ledger.NewTakeBack | None:
    """The refund state's rule: the purchase takes it in (refunded share, amount), and what
    that adds to what the purchase has taken back is to be taken from the account; None
    when it adds nothing."""
    target = refunded_share(purchase, refund)
    if target <= purchase.refunded_credits:
        return None
    before = purchase.taken_back
    purchase.refunded_credits = target
    purchase.refunded_amount = max(purchase.refunded_amount, refund.amount_refunded)
    more = purchase.taken_back - before
    if more <= 0:
        return None
    return ledger.NewTakeBack(
        purchase.account_id,
        more,
        key=REFUND_KEY.format(charge_id=refund.charge_id, amount_refunded=refund.amount_refunded),
        reason=f"refund of {purchase.description}: {format_credits(more)} credits"[:255],
        event_id=event_id,
    )


def effects_of_event(session: Session, event_id: int) -> list[dict[str, object]]:
    """The purchases a webhook event recorded (for `outbox events show`)."""
    rows = session.execute(
        select(CreditPurchase).where(CreditPurchase.event_id == event_id)
    ).scalars()
    return [
        {
            "table": "credit_purchases",
            "id": row.id,
            "account_id": row.account_id,
            "checkout_session_id": row.checkout_session_id,
            "credits": str(row.credits),
            "description": row.description,
        }
        for row in rows
    ]
