"""Plain DBAPI connections of the named reads: one statement text for both databases, the
engine's timeouts, values read back alike, a session's own uncommitted rows seen, database
failures as DatabaseError."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from outbox.driver.dbapi import (
    connect,
    document,
    flag,
    of_session,
    sqlite_database,
    utc,
)
from outbox.driver.errors import DatabaseError
from tests.cli.conftest import stored


@pytest.mark.parametrize(
    ("url", "database"),
    [
        ("sqlite:///./outbox.db", ("./outbox.db", False)),
        ("sqlite:////var/lib/outbox.db", ("/var/lib/outbox.db", False)),
        ("sqlite+pysqlite:///outbox.db", ("outbox.db", False)),
        ("sqlite://", (":memory:", False)),
        ("sqlite:///file:outbox.db?mode=ro&uri=true", ("file:outbox.db?mode=ro", True)),
    ],
)
def test_a_sqlite_url_names_the_file_sqlalchemy_opens(url, database):
    assert sqlite_database(url) == database


def test_one_statement_takes_a_list_and_times_on_both_databases(engine, reads):
    now = datetime.now(UTC)
    first = stored(engine, now=now - timedelta(microseconds=1))
    second = stored(engine, now=now)
    stored(engine, now=now + timedelta(seconds=1))
    sql = (
        "SELECT id, received_at FROM webhook_events"
        " WHERE id = ANY(:ids) AND received_at <= :until ORDER BY id"
    )
    rows = reads.rows(sql, ids=[first, second, 10**12], until=now)
    assert [r["id"] for r in rows] == [first, second]
    assert [utc(r["received_at"]) for r in rows] == [now - timedelta(microseconds=1), now]
    assert reads.rows(sql, ids=[], until=now) == []
    assert reads.value("SELECT count(*) FROM webhook_events WHERE event_type LIKE '%.event'") == 3


def test_a_naive_time_is_refused(reads):
    with pytest.raises(ValueError, match="naive"):
        reads.rows("SELECT id FROM webhook_events WHERE received_at < :t", t=datetime.now())


def test_values_read_back_alike_from_either_driver():
    paris = timezone(timedelta(hours=1))
    assert utc("2026-12-06 16:43:24.123456") == datetime(2026, 12, 6, 16, 43, 24, 123456, UTC)
    assert utc(datetime(2026, 12, 6, 17, 43, tzinfo=paris)) == datetime(
        2026, 12, 6, 16, 43, tzinfo=UTC
    )
    assert utc(None) is None
    assert (flag(1), flag(0), flag(None), flag(True)) == (True, False, None, True)
    assert document('{"a": 1}') == {"a": 1} == document({"a": 1})


def test_each_read_sees_what_was_committed_since_the_last(engine, reads):
    assert reads.value("SELECT count(*) FROM webhook_events") == 0
    stored(engine)
    assert reads.value("SELECT count(*) FROM webhook_events") == 1


def test_a_session_s_reads_see_its_own_uncommitted_rows(sessions):

    with sessions() as session:
        session.execute(
            text(
                "INSERT INTO webhook_events (source, delivery_id, event_type, headers,"
                " received_at, status) VALUES ('stripe', 'evt_mine', 't', '{}',"
                " '2026-01-01 00:00:00', 'pending')"
            )
        )
        db = of_session(session)
        assert db.value("SELECT delivery_id FROM webhook_events") == "evt_mine"
        session.rollback()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_sqlite_waits_for_a_writer_as_the_engine_does(reads):
    from outbox.driver.dbapi import SQLITE_BUSY_TIMEOUT_MS

    assert reads.value("PRAGMA busy_timeout") == SQLITE_BUSY_TIMEOUT_MS


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_postgres_has_the_engine_s_statement_timeout_and_deadline(database_url):
    with connect(database_url, timeout=1.5) as db:
        assert db.value("SHOW statement_timeout") == "1500ms"
        assert db.dbapi.deadline == pytest.approx(2.5)
        assert db.dbapi.autocommit


def test_a_missing_table_is_a_database_error_naming_it(reads):
    with pytest.raises(DatabaseError, match="no_such_table") as raised:
        reads.rows("SELECT id FROM no_such_table")
    assert raised.value.reason.startswith(("no such table", "relation"))


@pytest.mark.postgres
def test_an_unreachable_postgres_is_a_database_error():
    unreachable = connect("postgresql+psycopg://postgres@127.0.0.1:1/nope", timeout=1)
    with pytest.raises(DatabaseError) as raised, unreachable:
        pass
    assert "127.0.0.1" in raised.value.reason or "refused" in raised.value.reason


def test_a_url_of_another_database_is_refused():
    with pytest.raises(ValueError, match="sqlite or postgresql"), connect("mysql://x/y", timeout=1):
        pass
