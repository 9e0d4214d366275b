"""The driver layer: the plain connections of the reads (one statement text for both
databases, the engine's timeouts, values read back alike, database failures as
DatabaseError), and statements on a session's own psycopg connection (joining its
transaction, errors as SQLAlchemy's, constants written in, lists as one parameter, rows
written in one statement)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import psycopg
import pytest
from sqlalchemy import Integer, String, bindparam, column, exc, literal_column, select, text, values

from outbox.db import make_engine, make_sessionmaker, transaction
from outbox.driver import (
    DatabaseError,
    ListQuery,
    Statement,
    connect,
    document,
    flag,
    of_session,
    postgres_driver,
    postgres_text,
    sqlite_database,
    utc,
)
from tests.cli.conftest import stored
from tests.conftest import POSTGRES_ADMIN


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
    from sqlalchemy import text

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
    from outbox.driver import SQLITE_BUSY_TIMEOUT_MS

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


# --- statements on a session's psycopg connection ---


@pytest.fixture
def pg_sessions(postgres_url):  # type: ignore[no-untyped-def]
    engine = make_engine(postgres_url)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.mark.postgres
def test_a_driver_statement_joins_the_session_transaction_and_its_rollback(pg_sessions):
    with pytest.raises(RuntimeError), transaction(pg_sessions) as session:
        driver = postgres_driver(session)
        assert driver is not None
        driver.execute("CREATE TEMP TABLE t (n int) ON COMMIT DROP", None)
        driver.execute("INSERT INTO t VALUES (%s)", (1,))
        assert session.execute(text("SELECT count(*) FROM t")).scalar() == 1
        raise RuntimeError("roll it back")
    with transaction(pg_sessions) as session:
        assert session.execute(text("SELECT to_regclass('t')")).scalar() is None


@pytest.mark.postgres
def test_a_driver_statement_error_is_sqlalchemys_and_a_lost_server_invalidates_the_connection(
    pg_sessions,
):
    with pytest.raises(exc.ProgrammingError), transaction(pg_sessions) as session:
        postgres_driver(session).execute("SELECT nothing FROM nowhere", None)  # type: ignore[union-attr]
    with pytest.raises(exc.OperationalError) as lost, transaction(pg_sessions) as session:
        pid = session.execute(text("SELECT pg_backend_pid()")).scalar()
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        postgres_driver(session).execute("SELECT 1", None)  # type: ignore[union-attr]
    assert lost.value.connection_invalidated
    with transaction(pg_sessions) as session:  # the pool hands out a live connection again
        assert session.execute(text("SELECT 1")).scalar() == 1


@pytest.mark.postgres
def test_a_driver_statement_writes_its_constants_and_lists_of_constants_into_the_sql(
    pg_sessions,
):

    rows = values(column("n", Integer), column("status", String), name="r").data(
        [(1, "pending"), (2, "processing"), (3, "done")]
    )
    statement = select(rows.c.n).where(
        rows.c.status.in_(["pending", "processing"]), rows.c.n < bindparam("below")
    )
    query = Statement(statement)
    with transaction(pg_sessions) as session:
        assert sorted(query.rows(session, below=3)) == [(1,), (2,)]
        with pytest.raises(TypeError):
            query.rows(session)
    sql, named = postgres_text(statement, make_engine("postgresql+psycopg://").dialect)
    assert "IN ('pending', 'processing')" in sql and "POSTCOMPILE" not in sql
    assert "%(below)s" in sql and named == {"below"}


def test_a_statement_runs_alike_on_either_database_and_a_list_is_one_parameter(engine, sessions):
    from outbox.models import WebhookEvent
    from tests.factories import incoming, record

    ids = [r.id for r in record(engine, *(incoming(f"evt_{n}") for n in range(3)))]
    table = WebhookEvent.__table__
    among = ListQuery(
        lambda one_of: select(table.c.id).where(one_of(table.c.id), table.c.id > bindparam("above"))
    )
    with sessions() as session:
        assert sorted(among.rows(session, [*ids, 10**9], above=ids[0])) == [(i,) for i in ids[1:]]
        assert among.rows(session, [], above=0) == []


@pytest.mark.postgres
def test_a_statement_is_prepared_on_the_server_at_its_first_use(pg_sessions):
    query = Statement(select(literal_column("1").label("one")).where(bindparam("x") == 1))
    with transaction(pg_sessions) as session:
        assert query.rows(session, x=1) == [(1,)]
        prepared = session.execute(text("SELECT count(*) FROM pg_prepared_statements")).scalar()
    assert prepared >= 1
