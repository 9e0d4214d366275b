"""Statements on a session's own psycopg connection: they join its transaction, raise
SQLAlchemy's errors, write their constants into the SQL and are prepared on the server."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import Integer, String, bindparam, column, exc, literal_column, select, text, values

from outbox.db import make_engine, make_sessionmaker, transaction
from outbox.driver.prepared import CompiledStatement, SessionDriver, postgres_text
from tests.conftest import POSTGRES_ADMIN


@pytest.fixture
def pg_sessions(postgres_url):  # type: ignore[no-untyped-def]
    engine = make_engine(postgres_url)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.mark.postgres
def test_a_driver_statement_joins_the_session_transaction_and_its_rollback(pg_sessions):
    with pytest.raises(RuntimeError), transaction(pg_sessions) as session:
        driver = SessionDriver(session.connection())
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
        SessionDriver(session.connection()).execute("SELECT nothing FROM nowhere", None)
    with pytest.raises(exc.OperationalError) as lost, transaction(pg_sessions) as session:
        pid = session.execute(text("SELECT pg_backend_pid()")).scalar()
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        SessionDriver(session.connection()).execute("SELECT 1", None)
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
    dialect = make_engine("postgresql+psycopg://").dialect
    query = CompiledStatement(statement, dialect)
    with transaction(pg_sessions) as session:
        driver = SessionDriver(session.connection())
        assert sorted(query.execute(driver, {"below": 3}).fetchall()) == [(1,), (2,)]
    sql, named = postgres_text(statement, dialect)
    assert (sql, named) == (query.sql, query.named)
    assert "IN ('pending', 'processing')" in sql and "POSTCOMPILE" not in sql
    assert "%(below)s" in sql and named == {"below"}


@pytest.mark.postgres
def test_a_statement_is_prepared_on_the_server_at_its_first_use(pg_sessions):
    statement = select(literal_column("1").label("one")).where(bindparam("x") == 1)
    with transaction(pg_sessions) as session:
        query = CompiledStatement(statement, session.get_bind().dialect)
        assert query.execute(SessionDriver(session.connection()), {"x": 1}).fetchall() == [(1,)]
        prepared = session.execute(text("SELECT count(*) FROM pg_prepared_statements")).scalar()
    assert prepared >= 1
