"""Credits as exact decimals: how they are parsed from people and stored in the database.

A credit amount is a `Decimal` with at most four decimal places (0.0001 credit; the seeds
price operations at 0.2). Floats never enter: `0.1 + 0.2` is not `0.3` in binary floating
point, and a ledger that drifts by a ten-thousandth per entry is a ledger nobody trusts.

On Postgres a credit column is `NUMERIC(18, 4)`. SQLite has no decimal type (it would
keep such a column as a binary float, and `SUM` would add floats), so there the same column
holds whole ten-thousandths of a credit as an integer, which SQLite adds exactly.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import BigInteger, Numeric
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

CREDIT_PLACES = 4  #: decimal places a credit amount may have
QUANTUM = Decimal(1).scaleb(-CREDIT_PLACES)  #: credits; the smallest amount, 0.0001
UNITS_PER_CREDIT = 10**CREDIT_PLACES  #: SQLite stores amounts as integers of this many per credit
MAX_CREDITS = Decimal(10) ** 14 - QUANTUM  #: credits; the largest magnitude NUMERIC(18, 4) holds

_PLAIN_DECIMAL = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")


class InvalidAmount(ValueError):
    """Not an amount of credits: a float, NaN, exponent notation, too many decimals, too big."""


def parse_credits(value: str | Decimal | int) -> Decimal:
    """An exact credit amount (signed) from text, a Decimal or an int; never from a float.

    Text must be a plain decimal ("12", "-0.2", "3.5000"): no exponent ("1e3"), no
    thousands separator, at most four significant decimal places.
    """
    if isinstance(value, bool) or not isinstance(value, str | Decimal | int):
        raise InvalidAmount(f"credits must be given as text, Decimal or int, not {value!r}")
    if isinstance(value, str):
        text = value.strip()
        if not _PLAIN_DECIMAL.fullmatch(text):
            raise InvalidAmount(f"{value!r} is not a plain decimal number of credits")
        amount = Decimal(text)
    elif isinstance(value, int):
        amount = Decimal(value)
    else:
        amount = value
    if not amount.is_finite():
        raise InvalidAmount(f"{value!r} is not a finite amount of credits")
    try:
        exact = amount.quantize(QUANTUM)
    except InvalidOperation as exc:
        raise InvalidAmount(f"{value!r} is too large an amount of credits") from exc
    if exact != amount:
        raise InvalidAmount(f"{value!r} has more than {CREDIT_PLACES} decimal places")
    if abs(exact) > MAX_CREDITS:
        raise InvalidAmount(f"{value!r} is too large an amount of credits")
    return exact


def positive_credits(value: str | Decimal | int) -> Decimal:
    """A credit amount that must be more than zero (a spend, a hold, a pack's size)."""
    amount = parse_credits(value)
    if amount <= 0:
        raise InvalidAmount(f"{value!r} must be more than zero credits")
    return amount


def format_credits(amount: Decimal) -> str:
    """For people: "12", "0.2", "-3.75" (no trailing zeros, never exponent notation)."""
    text = f"{amount.quantize(QUANTUM):f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


class Credits(TypeDecorator[Decimal]):
    """A credit amount column: NUMERIC(18, 4) on Postgres, integer ten-thousandths on SQLite."""

    impl = Numeric(18, CREDIT_PLACES)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(Numeric(18, CREDIT_PLACES, asdecimal=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        amount = parse_credits(value)
        if dialect.name == "sqlite":
            return int(amount.scaleb(CREDIT_PLACES))
        return amount

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return (Decimal(int(value)) / UNITS_PER_CREDIT).quantize(QUANTUM)
        return Decimal(value).quantize(QUANTUM)

    @property
    def python_type(self) -> type[Decimal]:
        return Decimal


#: The DDL of a credit column, for migrations (the same as `Credits` compiles to).
CREDITS_DDL = Numeric(18, CREDIT_PLACES).with_variant(BigInteger(), "sqlite")
