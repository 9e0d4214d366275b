"""A stand-in effect table, as credit_ledger will be: rows naming the event they came from.

It lives on its own metadata, so the real schema (and its migrations) never see it; a test
creates it in its database and wires it into domain.effects.EFFECT_FINDERS like the lead
will wire the real tables.
"""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import BigInteger, Engine, Integer, Numeric, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class FakeBase(DeclarativeBase):
    pass


class FakeCredit(FakeBase):
    __tablename__ = "test_fake_credits"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(100), unique=True)
    amount: Mapped[Decimal] = mapped_column(Numeric(18, 4))
    event_id: Mapped[int | None] = mapped_column(BigInteger)


def grant(engine: Engine, event_id: int, key: str, amount: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            FakeCredit.__table__.insert().values(key=key, amount=Decimal(amount), event_id=event_id)
        )
