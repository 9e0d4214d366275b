"""`--json` is one shape everywhere: ISO-8601 UTC times, amounts as strings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

from outbox.cli.common import json_value
from outbox.db import transaction, utcnow


def test_times_are_iso_8601_in_utc_and_decimals_strings():
    paris = timezone(timedelta(hours=1))
    assert json_value(datetime(2026, 12, 6, 15, 0, tzinfo=paris)) == "2026-12-06T14:00:00+00:00"
    assert json_value(datetime(2026, 12, 6, 14, 0)) == "2026-12-06T14:00:00+00:00"  # naive: UTC
    assert json_value(Decimal("12.5000")) == "12.5000"


def test_ledger_and_account_listings_print_iso_times_and_string_amounts(cli, sessions):
    from domain import ledger
    from domain.account_opening import ensure_account

    with transaction(sessions) as session:
        ensure_account(session, 42, login="octo", now=utcnow(), welcome_credits=Decimal(50))
        ledger.adjust(session, 42, Decimal("-0.5"), key="adjust:k", reason="x", now=utcnow())
    [welcome, adjusted] = cli("credits", "history", "octo", "--json").json_lines()
    assert adjusted["amount"] == "-0.5000" and welcome["amount"] == "50.0000"
    stamp = datetime.fromisoformat(adjusted["created_at"])
    assert "T" in adjusted["created_at"] and stamp.utcoffset() == timedelta(0)
    [account] = cli("accounts", "list", "--json").json_lines()
    assert datetime.fromisoformat(account["created_at"]).tzinfo is not None
    assert account["balance"] == "49.5000"
    assert datetime.fromisoformat(account["created_at"]).astimezone(UTC) <= utcnow()
