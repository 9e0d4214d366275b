"""A batch's statements: a column matched against a list, a table's new rows and its rows
written over, each in one go."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import Table, bindparam, select
from sqlalchemy.exc import DBAPIError, StatementError

from domain.account_opening import ensure_account
from domain.ledger_tables import CreditEntry
from outbox.db import transaction
from outbox.driver.statements import Query, insert_all, one_of, update_all, write_over

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
ENTRIES: Table = CreditEntry.__table__  # type: ignore[assignment]


def _entry(key: str, amount: str, **fields: object) -> dict[str, object]:
    row: dict[str, object] = {
        "key": key, "account_id": 1, "amount": Decimal(amount), "debt_change": Decimal(0),
        "reason": f"reason of {key}", "event_id": None, "job_id": None, "created_at": NOW,
    }  # fmt: skip
    return {**row, **fields}


@pytest.fixture
def account(sessions):
    with transaction(sessions) as session:
        ensure_account(session, 1, login="octo", now=NOW, welcome_credits=Decimal(0))


def test_insert_all_writes_the_rows_in_their_order_with_exact_values(sessions, account):
    rows = [_entry(f"k{n}", f"{n}.0001", event_id=n if n % 2 else None) for n in range(60)]
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
    rows = [_entry("good", "1"), _entry("naive", "1", created_at=datetime(2026, 12, 1))]
    with pytest.raises((ValueError, StatementError)), transaction(sessions) as session:
        insert_all(session, ENTRIES, rows)
    with sessions() as session:
        assert session.scalars(select(ENTRIES.c.id)).all() == []


def test_insert_all_refuses_text_no_column_can_hold(sessions, account):
    with pytest.raises((DBAPIError, StatementError, ValueError)), transaction(sessions) as s:
        insert_all(s, ENTRIES, [_entry("lone", "1", reason="a lone \udc80 surrogate")])
    with sessions() as session:
        assert session.scalars(select(ENTRIES.c.id)).all() == []


def test_one_of_matches_exactly_the_values_listed(sessions, account):
    with transaction(sessions) as session:
        insert_all(session, ENTRIES, [_entry(f"k{n}", "1") for n in range(5)])
    with sessions() as session:
        dialect = session.get_bind().dialect.name
        keys = select(ENTRIES.c.key).where(one_of(ENTRIES.c.key, "keys", dialect))
        assert set(session.scalars(keys, {"keys": ["k1", "k3", "nope"]})) == {"k1", "k3"}
        assert set(session.scalars(keys, {"keys": []})) == set()
        ids = select(ENTRIES.c.account_id).where(one_of(ENTRIES.c.account_id, "ids", dialect))
        assert set(session.scalars(ids, {"ids": [1, 2]})) == {1}


def test_update_all_writes_the_columns_given_over_the_rows_of_each_key(sessions, account):
    with transaction(sessions) as session:
        insert_all(session, ENTRIES, [_entry(f"k{n}", "1") for n in range(4)])
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
        insert_all(session, ENTRIES, [_entry("k0", "1")])
    with sessions() as session:
        [entry_id] = session.scalars(select(ENTRIES.c.id)).all()
    naive = [{"id": entry_id, "reason": "late", "created_at": datetime(2026, 12, 2)}]
    with pytest.raises((ValueError, StatementError)), transaction(sessions) as session:
        update_all(session, ENTRIES, naive)
    with sessions() as session:
        assert session.scalars(select(ENTRIES.c.reason)).all() == ["reason of k0"]


def test_a_statement_runs_alike_on_either_database_and_a_list_is_one_parameter(engine, sessions):
    from outbox.models import WebhookEvent
    from tests.factories import incoming, record

    ids = [r.id for r in record(engine, *(incoming(f"evt_{n}") for n in range(3)))]
    table = WebhookEvent.__table__
    among = Query(
        lambda one_of: select(table.c.id).where(
            one_of(table.c.id, "ids"), table.c.id > bindparam("above")
        )
    )
    with sessions() as session:
        assert sorted(among.rows(session, ids=[*ids, 10**9], above=ids[0])) == [
            (i,) for i in ids[1:]
        ]
        assert among.rows(session, ids=[], above=0) == []
        with pytest.raises(TypeError, match=r"\['above', 'ids'\]"):
            among.rows(session, ids=ids)


@pytest.mark.parametrize("columns", [("reason",), ()])
def test_write_over_writes_mapped_rows_changed_in_memory_and_lets_them_go(
    sessions, account, columns
):
    with transaction(sessions) as session:
        insert_all(session, ENTRIES, [_entry(f"k{n}", "1") for n in range(3)])
    with transaction(sessions) as session:
        loaded = session.scalars(select(CreditEntry).order_by(CreditEntry.id)).all()
        for row in loaded[1:]:
            row.reason = f"written over {row.key}"
        write_over(session, ENTRIES, loaded[1:], columns)
        assert all(row not in session for row in loaded[1:])
    with sessions() as session:
        reasons = session.scalars(select(ENTRIES.c.reason).order_by(ENTRIES.c.id)).all()
    assert reasons == ["reason of k0", "written over k1", "written over k2"]
