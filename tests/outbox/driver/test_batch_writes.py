"""A batch's writes of one table, each in one statement: its new rows, its rows written
over, mapped rows changed in memory; exact values, in order, or nothing at all."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import pytest
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, StatementError

from domain.ledger_tables import CreditEntry
from outbox.db import transaction
from outbox.driver.batch_writes import insert_all, update_all, write_over
from tests.outbox.driver.conftest import ENTRIES, entry


def test_insert_all_writes_the_rows_in_their_order_with_exact_values(sessions, account):
    rows = [entry(f"k{n}", f"{n}.0001", event_id=n if n % 2 else None) for n in range(60)]
    rows[3]["reason"] = "ünïcode — and a 'quote'"
    with transaction(sessions) as session:
        insert_all(session, ENTRIES, rows)
    with sessions() as session:
        found = session.execute(
            select(ENTRIES.c.key, ENTRIES.c.amount, ENTRIES.c.event_id, ENTRIES.c.reason,
                   ENTRIES.c.created_at).order_by(ENTRIES.c.id)
        ).all()  # fmt: skip
    assert [tuple(row) for row in found] == [
        (r["key"], r["amount"], r["event_id"], r["reason"], r["created_at"]) for r in rows
    ]


def test_insert_all_of_no_rows_writes_nothing(sessions, account):
    with transaction(sessions) as session:
        insert_all(session, ENTRIES, [])
        assert session.scalars(select(ENTRIES.c.id)).all() == []


def test_insert_all_refuses_a_naive_time_and_writes_nothing(sessions, account):
    rows = [entry("good", "1"), entry("naive", "1", created_at=datetime(2026, 12, 1))]
    with pytest.raises((ValueError, StatementError)), transaction(sessions) as session:
        insert_all(session, ENTRIES, rows)
    with sessions() as session:
        assert session.scalars(select(ENTRIES.c.id)).all() == []


def test_insert_all_refuses_text_no_column_can_hold(sessions, account):
    with pytest.raises((DBAPIError, StatementError, ValueError)), transaction(sessions) as s:
        insert_all(s, ENTRIES, [entry("lone", "1", reason="a lone \udc80 surrogate")])
    with sessions() as session:
        assert session.scalars(select(ENTRIES.c.id)).all() == []


def test_update_all_writes_the_columns_given_over_the_rows_of_each_key(sessions, account):
    with transaction(sessions) as session:
        insert_all(session, ENTRIES, [entry(f"k{n}", "1") for n in range(4)])
    with sessions() as session:
        ids = session.scalars(select(ENTRIES.c.id).order_by(ENTRIES.c.id)).all()
    changed = [
        {"id": ids[1], "reason": "written over", "amount": Decimal("2.5")},
        {"id": ids[3], "reason": "ünïcode 'again'", "amount": Decimal("0.0001")},
    ]
    with transaction(sessions) as session:
        update_all(session, ENTRIES, changed)
    with sessions() as session:
        found = session.execute(
            select(ENTRIES.c.key, ENTRIES.c.reason, ENTRIES.c.amount).order_by(ENTRIES.c.id)
        ).all()
    assert [tuple(row) for row in found] == [
        ("k0", "reason of k0", Decimal(1)),
        ("k1", "written over", Decimal("2.5")),
        ("k2", "reason of k2", Decimal(1)),
        ("k3", "ünïcode 'again'", Decimal("0.0001")),
    ]


def test_update_all_refuses_a_naive_time_and_writes_nothing(sessions, account):
    with transaction(sessions) as session:
        insert_all(session, ENTRIES, [entry("k0", "1")])
    with sessions() as session:
        [entry_id] = session.scalars(select(ENTRIES.c.id)).all()
    naive = [{"id": entry_id, "reason": "late", "created_at": datetime(2026, 12, 2)}]
    with pytest.raises((ValueError, StatementError)), transaction(sessions) as session:
        update_all(session, ENTRIES, naive)
    with sessions() as session:
        assert session.scalars(select(ENTRIES.c.reason)).all() == ["reason of k0"]


@pytest.mark.parametrize("columns", [("reason",), ()])
def test_write_over_writes_mapped_rows_changed_in_memory_and_lets_them_go(
    sessions, account, columns
):
    with transaction(sessions) as session:
        insert_all(session, ENTRIES, [entry(f"k{n}", "1") for n in range(3)])
    with transaction(sessions) as session:
        loaded = session.scalars(select(CreditEntry).order_by(CreditEntry.id)).all()
        for row in loaded[1:]:
            row.reason = f"written over {row.key}"
        write_over(session, ENTRIES, loaded[1:], columns)
        assert all(row not in session for row in loaded[1:])
    with sessions() as session:
        reasons = session.scalars(select(ENTRIES.c.reason).order_by(ENTRIES.c.id)).all()
    assert reasons == ["reason of k0", "written over k1", "written over k2"]
