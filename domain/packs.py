"""The credit pack catalog: which Stripe price buys how many credits.

Operators set it (`outbox packs set|remove|load`); a checkout session's line items (or its
`metadata.credit_pack`) name a price id, and the catalog turns it into credits. A removed
pack is retired, not deleted: it is no longer listed as on sale, but a late payment for it
is still granted, because the customer has paid.

Pack file (`outbox packs load FILE`), TOML or JSON, one entry per pack:

    [[pack]]
    price_id = "price_1Q…"     # the Stripe price id (required)
    name = "Découverte"        # shown to people (required)
    credits = 25               # up to 4 decimals (25, 0.5, "12.25"); read exactly, never as a float
    price = "4.99"             # display price in the currency's main unit (4.99 or "4,99")
    currency = "eur"           # ISO 4217, display only
    active = true              # optional, default true

The JSON form is `{"pack": [{...}, ...]}` (or a bare list of the same objects).
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from sqlalchemy import BigInteger, Boolean, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from domain.credits import Credits, InvalidAmount, format_credits, positive_credits
from outbox.session import Base, UTCDateTime

_CURRENCY = re.compile(r"[a-z]{3}")
_PRICE = re.compile(r"\d+(\.\d{1,2})?")
_PRICE_ID = re.compile(r"[A-Za-z0-9_\-]{1,255}")


class InvalidPack(ValueError):
    """A pack definition that cannot be stored (the message names the field)."""


class CreditPack(Base):
    __tablename__ = "credit_packs"

    #: The Stripe price id a checkout line item carries.
    price_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    credits: Mapped[Decimal] = mapped_column(Credits())
    #: Display price, in the currency's minor unit (499 = 4,99 €); never used to charge.
    unit_amount: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(3))
    #: On sale; a retired pack is still honoured for payments already made.
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    def as_dict(self) -> dict[str, Any]:
        return {
            "price_id": self.price_id,
            "name": self.name,
            "credits": format_credits(self.credits),
            "price": display_price(self.unit_amount, self.currency),
            "currency": self.currency,
            "active": self.active,
        }


@dataclass(frozen=True)
class PackSpec:
    """A pack as an operator defines it, checked."""

    price_id: str
    name: str
    credits: Decimal
    unit_amount: int | None = None
    currency: str | None = None
    active: bool = True

    @classmethod
    def parse(cls, raw: dict[str, Any], where: str = "pack") -> PackSpec:
        """From one entry of a pack file (or the CLI's options); InvalidPack names the field."""
        if not isinstance(raw, dict):
            raise InvalidPack(f"{where}: expected a table/object, got {type(raw).__name__}")
        unknown = set(raw) - {"price_id", "name", "credits", "price", "currency", "active"}
        if unknown:
            raise InvalidPack(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        price_id = raw.get("price_id")
        if not isinstance(price_id, str) or not _PRICE_ID.fullmatch(price_id):
            raise InvalidPack(f"{where}: price_id must be a Stripe price id, got {price_id!r}")
        name = raw.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > 255:
            raise InvalidPack(f"{where}: name must be a non-empty text")
        try:
            credits = positive_credits(raw.get("credits"))  # type: ignore[arg-type]
        except InvalidAmount as exc:
            raise InvalidPack(f"{where}: credits: {exc}") from None
        currency = raw.get("currency")
        if currency is not None and (
            not isinstance(currency, str) or not _CURRENCY.fullmatch(currency.lower())
        ):
            raise InvalidPack(f"{where}: currency must be a 3-letter code such as 'eur'")
        active = raw.get("active", True)
        if not isinstance(active, bool):
            raise InvalidPack(f"{where}: active must be true or false")
        return cls(
            price_id=price_id,
            name=name.strip(),
            credits=credits,
            unit_amount=_minor_units(raw.get("price"), where),
            currency=currency.lower() if isinstance(currency, str) else None,
            active=active,
        )


def _minor_units(price: Any, where: str) -> int | None:
    if price is None:
        return None
    if isinstance(price, bool) or not isinstance(price, str | int | Decimal):
        raise InvalidPack(f"{where}: price must be an amount such as 4.99")
    text = (f"{price:f}" if isinstance(price, Decimal) else str(price)).strip().replace(",", ".")
    if not _PRICE.fullmatch(text):
        raise InvalidPack(f"{where}: price {price!r} is not an amount such as 4.99")
    try:
        return int(Decimal(text).scaleb(2))
    except InvalidOperation:
        raise InvalidPack(f"{where}: price {price!r} is not an amount") from None


def display_price(unit_amount: int | None, currency: str | None) -> str | None:
    """ "4,99 €" for euros, "14.99 USD" otherwise; None when the pack has no display price."""
    if unit_amount is None:
        return None
    major = f"{Decimal(unit_amount).scaleb(-2):.2f}"
    if currency == "eur":
        return f"{major.replace('.', ',')} €"
    return f"{major} {(currency or '').upper()}".strip()


def set_pack(session: Session, spec: PackSpec, *, now: datetime) -> bool:
    """Create or replace the pack of `spec.price_id`; True when it was new."""
    row = session.get(CreditPack, spec.price_id)
    created = row is None
    if row is None:
        row = CreditPack(price_id=spec.price_id)
        session.add(row)
    row.name = spec.name
    row.credits = spec.credits
    row.unit_amount = spec.unit_amount
    row.currency = spec.currency
    row.active = spec.active
    row.updated_at = now
    session.flush()
    return created


def retire_pack(session: Session, price_id: str, *, now: datetime) -> bool:
    """Take a pack off sale (kept for late payments); False when no such pack is on sale."""
    row = session.get(CreditPack, price_id)
    if row is None or not row.active:
        return False
    row.active = False
    row.updated_at = now
    return True


def list_packs(session: Session, *, include_retired: bool = False) -> list[CreditPack]:
    query = select(CreditPack).order_by(CreditPack.credits, CreditPack.price_id)
    if not include_retired:
        query = query.where(CreditPack.active.is_(True))
    return list(session.execute(query).scalars())


def read_pack_file(path: Path) -> list[PackSpec]:
    """The packs a TOML or JSON file defines (by its suffix; else tried as TOML then JSON)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidPack(f"{path}: cannot read: {exc}") from None
    document = _parse_document(path, text)
    entries = document.get("pack") if isinstance(document, dict) else document
    if isinstance(document, dict) and entries is None:
        entries = document.get("packs")
    if not isinstance(entries, list) or not entries:
        raise InvalidPack(f"{path}: expected a list of packs under 'pack'")
    specs = [PackSpec.parse(raw, f"{path}: pack {n}") for n, raw in enumerate(entries, 1)]
    seen: set[str] = set()
    for spec in specs:
        if spec.price_id in seen:
            raise InvalidPack(f"{path}: price_id {spec.price_id} appears twice")
        seen.add(spec.price_id)
    return specs


def _parse_document(path: Path, text: str) -> Any:
    suffix = path.suffix.lower()
    if suffix in (".json", ".jsonl"):
        return _json(path, text)
    if suffix == ".toml":
        return _toml(path, text)
    try:
        return _toml(path, text)
    except InvalidPack:
        return _json(path, text)


def _json(path: Path, text: str) -> Any:
    try:
        # Numbers with a fraction are read as exact Decimals, never as binary floats.
        return json.loads(text, parse_float=Decimal)
    except ValueError as exc:
        lines = [line for line in text.splitlines() if line.strip()]
        try:  # one pack a line, as `outbox packs list --json` prints them
            return [json.loads(line, parse_float=Decimal) for line in lines] if lines else None
        except ValueError:
            raise InvalidPack(f"{path}: not valid JSON: {exc}") from None


def _toml(path: Path, text: str) -> Any:
    try:
        return tomllib.loads(text, parse_float=Decimal)
    except (tomllib.TOMLDecodeError, ValueError) as exc:
        raise InvalidPack(f"{path}: not valid TOML: {exc}") from None


def load_packs(session: Session, specs: list[PackSpec], *, now: datetime) -> tuple[int, int]:
    """Store every pack of a file; (created, updated)."""
    created = sum(set_pack(session, spec, now=now) for spec in specs)
    return created, len(specs) - created
