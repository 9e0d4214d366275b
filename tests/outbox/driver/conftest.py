"""Rows of the credit ledger, a table with the column types the driver layer must bind
exactly (numeric, time, text), for its tests of statements and batch writes."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import Table

from domain.account_opening import ensure_account
from domain.ledger_tables import CreditEntry
from outbox.db import transaction

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
ENTRIES: Table = CreditEntry.__table__  # type: ignore[assignment]


def entry(key: str, amount: str, **fields: object) -> dict[str, object]:
    """A ledger entry's row of account 1, `fields` over its defaults."""
    row: dict[str, object] = {
        "key": key, "account_id": 1, "amount": Decimal(amount), "debt_change": Decimal(0),
        "reason": f"reason of {key}", "event_id": None, "job_id": None, "created_at": NOW,
    }  # fmt: skip
    return {**row, **fields}


@pytest.fixture
def account(sessions):
    """Account 1, which the entries belong to."""
    with transaction(sessions) as session:
        ensure_account(session, 1, login="octo", now=NOW, welcome_credits=Decimal(0))
