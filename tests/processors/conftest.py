"""Fixtures for the processors: settings naming the test handler, a runtime on the test database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from outbox.db import make_engine
from outbox.migrate import upgrade
from outbox.settings import Settings
from processors import runtime as runtimes
from processors.runtime import Runtime
from tests.processors.handlers import HANDLER_TABLE, create_effects_table, metadata


@pytest.fixture
def proc_settings(settings: Settings) -> Settings:
    """The test settings, with the test handler, short retries and a short lease."""
    return settings.model_copy(
        update={
            "handler_table": HANDLER_TABLE,
            "lease_seconds": 30,
            "retry_base_seconds": 0.05,
            "retry_max_delay_seconds": 0.2,
            "retry_max_attempts": 3,
            "sweep_interval_seconds": 0.2,
        }
    )


@pytest.fixture
def effects_engine(engine: Engine) -> Iterator[Engine]:
    """The test database with the test handler's effect table in it (dropped afterwards)."""
    create_effects_table(engine)
    yield engine
    metadata.drop_all(engine)


@pytest.fixture
def runtime(proc_settings: Settings, effects_engine: Engine) -> Iterator[Runtime]:
    yield runtimes.configure(proc_settings, engine=effects_engine)


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[tuple[str, Engine]]:
    """A migrated SQLite file of its own, with the test handler's effect table (for tests
    that start the outbox's commands as processes on it): its URL and an engine on it."""
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    upgrade(url)
    engine = make_engine(url)
    create_effects_table(engine)
    yield url, engine
    engine.dispose()
