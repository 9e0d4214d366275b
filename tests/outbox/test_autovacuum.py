"""Whether Postgres cleans up after the outbox: the server's switches and each table's own,
read from a real server; SQLite has nothing to say."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import text

from outbox.autovacuum import AutovacuumState, autovacuum_state, is_off

#: Spellings of a boolean storage parameter, as an operator might write them.
SPELLINGS = [
    "false",
    "FALSE",
    "off",
    "Off",
    "no",
    "n",
    "f",
    "fal",
    "0",
    "true",
    "on",
    "yes",
    "1",
    "t",
]


def test_sqlite_has_no_autovacuum_state(tmp_path):
    from outbox.db import make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'outbox.db'}")
    try:
        assert autovacuum_state(engine) is None
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_the_server_switches_are_read_as_the_server_reports_them(postgres_url):
    from outbox.db import make_engine

    engine = make_engine(postgres_url)
    try:
        state = autovacuum_state(engine)
        with engine.connect() as conn:
            server = conn.execute(text("SELECT current_setting('autovacuum')::boolean")).scalar()
            counts = conn.execute(text("SELECT current_setting('track_counts')::boolean")).scalar()
    finally:
        engine.dispose()
    assert state is not None
    assert (state.server_on, state.track_counts, state.tables_off) == (server, counts, ())


@pytest.mark.postgres
@pytest.mark.parametrize("value", ["false", "off", "0"])
def test_a_table_that_switched_autovacuum_off_is_named(postgres_url, value):
    from outbox.db import make_engine

    engine = make_engine(postgres_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(f"ALTER TABLE webhook_event_failures SET (autovacuum_enabled = {value})")
            )
            conn.execute(text("ALTER TABLE credit_ledger SET (autovacuum_enabled = on)"))
        state = autovacuum_state(engine)
    finally:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE webhook_event_failures RESET (autovacuum_enabled)"))
            conn.execute(text("ALTER TABLE credit_ledger RESET (autovacuum_enabled)"))
        engine.dispose()
    assert state is not None and state.tables_off == ("webhook_event_failures",)


@pytest.mark.postgres
def test_off_is_what_postgres_itself_reads_as_false(postgres_url):
    conninfo = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo) as conn:
        for spelling in SPELLINGS:
            postgres_says = conn.execute("SELECT NOT %s::boolean", [spelling]).fetchone()
            assert postgres_says is not None
            assert is_off(spelling) is postgres_says[0], spelling


def test_the_problem_names_the_first_thing_that_keeps_autovacuum_from_running():
    assert AutovacuumState(True, True, ()).problem is None
    assert AutovacuumState(False, True, ("webhook_events",)).problem == (
        "the server runs with autovacuum = off"
    )
    assert "track_counts = off" in (AutovacuumState(True, False, ()).problem or "")
    assert AutovacuumState(True, True, ("a", "b")).problem == "autovacuum_enabled = false on a, b"
