"""`/readyz` tells the truth: ready only on a reachable database at the migration head."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from starlette.testclient import TestClient

from ingress.app import create_app
from outbox.db import make_engine
from outbox.migrate import upgrade
from outbox.schema import code_heads


@pytest.fixture
def empty_sqlite(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    yield engine
    engine.dispose()


def test_a_database_never_migrated_is_not_ready_and_says_run_migrate(settings, empty_sqlite):
    with TestClient(create_app(settings, engine=empty_sqlite)) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "reason": "database not migrated: run `outbox migrate`",
    }


def test_a_database_behind_the_head_is_not_ready_and_names_both_revisions(settings, tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0008_ordering_news")
    engine = make_engine(url)
    try:
        with TestClient(create_app(settings, engine=engine)) as client:
            response = client.get("/readyz")
    finally:
        engine.dispose()
    assert response.status_code == 503
    reason = response.json()["reason"]
    assert "at 0008_ordering_news, not at the migration head" in reason
    assert code_heads()[0] in reason and "outbox migrate" in reason


def test_a_database_migrated_by_a_newer_release_is_not_ready(settings, engine):
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_from_the_future'"))
    try:
        with TestClient(create_app(settings, engine=engine)) as client:
            response = client.get("/readyz")
        assert response.status_code == 503
        assert "9999_from_the_future, which this code does not know" in response.json()["reason"]
    finally:
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE alembic_version SET version_num = :head"), {"head": code_heads()[0]}
            )


def test_an_unreachable_database_is_not_ready_with_the_reason(settings):
    dead = make_engine("postgresql+psycopg://postgres@127.0.0.1:1/nowhere")
    with TestClient(create_app(settings, engine=dead)) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["reason"] == "database unreachable: OperationalError"


def test_a_migrated_database_is_ready(settings, engine):
    with TestClient(create_app(settings, engine=engine)) as client:
        assert client.get("/readyz").json() == {"status": "ready"}
