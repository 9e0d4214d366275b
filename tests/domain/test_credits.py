"""Credits are exact decimals: parsed to a ten-thousandth, and stored and summed exactly in
every credit column, as the migrated schema declares them."""

from __future__ import annotations

from decimal import Decimal

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Float, Numeric, select

from domain import balances, ledger
from domain.credits import InvalidAmount, format_credits, parse_credits
from domain.jobs import PrJob
from domain.usage import UsageRecord, record_usage
from migrations.schema import schema_filter
from outbox.db import Base, transaction
from tests.domain.billing_support import NOW, new_account

D = Decimal


@pytest.mark.parametrize(
    ("text", "expected"),
    [("12", "12"), ("0.2", "0.2"), ("-3.75", "-3.75"), ("0.0001", "0.0001"), ("1.50000", "1.5"),
     (" 7 ", "7"), (".5", "0.5")],
)  # fmt: skip
def test_parse_credits_is_exact_to_a_ten_thousandth(text, expected):
    assert parse_credits(text) == D(expected)
    assert format_credits(parse_credits(text)) == expected


@pytest.mark.parametrize(
    "bad", ["1e3", "0.00001", "abc", "nan", "NaN", "inf", "", "1,5", "--1", "1_000",
            "100000000000000", 0.1, True, None, D("NaN"), D("1E-7")],
)  # fmt: skip
def test_parse_credits_refuses_floats_exponents_and_too_many_decimals(bad):
    with pytest.raises(InvalidAmount):
        parse_credits(bad)


def test_amounts_survive_the_database_exactly(sessions):
    new_account(sessions)
    with transaction(sessions) as s:
        for i in range(10):
            ledger.credit(s, 1, "0.1", key=f"tenth:{i}", reason="test", now=NOW)
        ledger.credit(s, 1, "12345678901.2345", key="big", reason="test", now=NOW)
    with transaction(sessions) as s:
        assert balances.balance(s, 1) == D("12345678902.2345")
        amounts = [e.amount for e in balances.history(s, 1)]
    assert amounts[:10] == [D("0.1")] * 10
    assert all(isinstance(a, Decimal) for a in amounts)


def test_every_credit_column_has_the_exact_credits_type():
    plain = [
        f"{table.name}.{column.name}"
        for table in Base.metadata.sorted_tables
        for column in table.columns
        if isinstance(column.type, Numeric | Float)
    ]
    assert plain == []


def test_job_credits_and_usage_quantities_are_stored_exactly(sessions):
    huge = D("12345678901234.5678")  # 18 digits: more than a binary float keeps
    with transaction(sessions) as s:
        job = PrJob(
            origin="submitted", account_id=1, installation_id=1, repository="o/r",
            base_branch="main", head_branch="h", title="t", body="b", files=[],
            required_credits=huge, status="failed", created_at=NOW,
        )  # fmt: skip
        s.add(job)
        record_usage(
            s, key="k", account_id=1, job_id=None, quantity=huge, meter_event_name="m", now=NOW
        )
    with transaction(sessions) as s:
        assert s.scalar(select(PrJob.required_credits)) == huge
        assert s.scalar(select(UsageRecord.quantity)) == huge


def test_the_migrated_schema_matches_the_models(engine):
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"include_object": schema_filter(conn.dialect.name)}
        )
        diff = compare_metadata(context, Base.metadata)
    assert diff == []
