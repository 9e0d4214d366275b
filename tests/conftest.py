"""Shared fixtures: real databases (SQLite always, Postgres when reachable; under CI it must be).

Every test run makes its own Postgres database and drops it at the end, and every test
that touches Redis uses its own key namespace, so runs never see each other's rows.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine, text

import migrations.schema  # noqa: F401  (the whole schema on Base.metadata)
from outbox.db import Base, make_engine, make_sessionmaker
from outbox.driver.dbapi import Connection, connect
from outbox.migrate import upgrade
from outbox.settings import Settings
from tests.services import clear_test_namespaces, fresh_namespace

POSTGRES_ADMIN = os.environ.get(
    "OUTBOX_TEST_POSTGRES", "host=127.0.0.1 port=5432 user=postgres dbname=test"
)
REDIS_URL = os.environ.get("OUTBOX_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
#: Real GitHub and Stripe payload examples, copied from upstream (tests/fixtures/README.md).
CORPUS = Path(__file__).resolve().parent / "fixtures"

GITHUB_SECRET = "test-github-secret"
STRIPE_SECRET = "whsec_test_secret"


def _require(service: str, error: Exception) -> None:
    message = f"{service} is not reachable: {error}"
    if IN_CI:
        pytest.fail(f"{message} (CI must test against it)")
    pytest.skip(message)


def create_postgres_database(prefix: str = "outbox_test") -> str:
    """A new, empty database on the shared server; returns its SQLAlchemy URL."""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    params = psycopg.conninfo.conninfo_to_dict(POSTGRES_ADMIN)
    host, port, user = params.get("host"), params.get("port", 5432), params.get("user")
    return f"postgresql+psycopg://{user}@{host}:{port}/{name}"


def drop_postgres_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def own_postgres_database(prefix: str, revision: str = "head") -> Iterator[str]:
    """A new database on the shared server, migrated to `revision`, dropped afterwards.
    Postgres unreachable: the test is skipped, or fails under CI."""
    try:
        url = create_postgres_database(prefix)
    except psycopg.OperationalError as exc:
        _require("PostgreSQL", exc)
        raise
    try:
        upgrade(url, revision)
        yield url
    finally:
        drop_postgres_database(url)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A migrated Postgres database for this test run (emptied after each test that uses it)."""
    with own_postgres_database("outbox_test") as url:
        yield url


@pytest.fixture
def database_at_0012() -> Iterator[str]:
    """A Postgres database of its own at 0012, the single table from before partitions:
    what the online migration's tests move (tests/outbox/single_table.py fills it)."""
    with own_postgres_database("outbox_single_table", "0012_in_line_objects") as url:
        yield url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "outbox.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database: a fresh SQLite file, then the run's Postgres database."""
    if request.param == "sqlite":
        path = tmp_path / "outbox.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    url = request.getfixturevalue("postgres_url")
    yield url
    _empty_postgres(url)


def _empty_postgres(url: str) -> None:
    engine = make_engine(url, pool_size=1)
    try:
        tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
        with engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    finally:
        engine.dispose()


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def reads(database_url: str) -> Iterator[Connection]:
    """A plain driver connection for the named reads (outbox/queries.py)."""
    with connect(database_url, timeout=5.0) as db:
        yield db


@pytest.fixture
def sessions(engine: Engine):  # type: ignore[no-untyped-def]
    return make_sessionmaker(engine)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        github_webhook_secret=GITHUB_SECRET,
        stripe_webhook_secret=STRIPE_SECRET,
        stripe_mode="any",
        redis_namespace=fresh_namespace(),
        redis_url=REDIS_URL,
    )


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The shared Redis server; tests isolate themselves with their own key namespace."""
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        _require("Redis", exc)
    return REDIS_URL


@pytest.fixture(scope="session", autouse=True)
def _clear_redis_namespaces() -> Iterator[None]:
    """The keys this process's tests left in the shared Redis go when its tests are over."""
    yield
    clear_test_namespaces(REDIS_URL)
