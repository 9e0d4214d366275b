"""Statements sent straight on psycopg (outbox.db.postgres_driver) behave like SQLAlchemy's."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import Integer, String, bindparam, column, exc, select, text, values

from outbox.db import (
    DriverStatement,
    make_engine,
    make_sessionmaker,
    postgres_driver,
    transaction,
)
from tests.conftest import POSTGRES_ADMIN


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
    query = DriverStatement(statement)
    with transaction(pg_sessions) as session:
        driver = postgres_driver(session)
        assert driver is not None
        assert sorted(query.execute(driver, {"below": 3}).fetchall()) == [(1,), (2,)]
        with pytest.raises(TypeError):
            query.execute(driver, {})
    sql, named = query._sql, query._named
    assert "IN ('pending', 'processing')" in sql and "POSTCOMPILE" not in sql
    assert named == {"below"}


def test_the_embedded_sqlite_syncs_every_commit_so_a_2xx_survives_power_loss(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'outbox.db'}")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    finally:
        engine.dispose()
