"""Driving the `outbox` command in-process against the real databases, and shaping rows for it."""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from click.testing import Result
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from domain.effects import EFFECT_FINDERS, rows_naming_event
from outbox import claiming, finishing, operator_writes
from outbox.cli import app
from outbox.db import transaction, utcnow
from outbox.models import WebhookEvent
from outbox.retry import RetryPolicy
from outbox.settings import get_settings
from tests.cli.effects import FakeBase, FakeCredit
from tests.conftest import GITHUB_SECRET, STRIPE_SECRET
from tests.factories import incoming, record

#: A Redis nobody listens on: commands that ring the processors must cope (the sweeper is there).
NO_REDIS = "redis://127.0.0.1:1/0"
LEASE = timedelta(minutes=5)
ONE_TRY = RetryPolicy(max_attempts=1, jitter=0)


@dataclass
class Ran:
    """One command run: its exit code and what it printed where."""

    code: int
    stdout: str
    stderr: str

    def json_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]


Cli = Callable[..., Ran]


@pytest.fixture
def cli_env(database_url: str) -> dict[str, str | None]:
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": NO_REDIS,
        "GITHUB_WEBHOOK_SECRET": GITHUB_SECRET,
        "STRIPE_WEBHOOK_SECRET": STRIPE_SECRET,
        "STRIPE_MODE": "any",
        "STRIPE_API_KEY": None,  # None: unset, whatever the shell running the tests has
        "GITHUB_APP_ID": None,
        "GITHUB_APP_PRIVATE_KEY": None,
        "GITHUB_APP_PRIVATE_KEY_FILE": None,
        "HANDLER_TABLE": "domain.handlers:handler_table",
        "COLUMNS": "200",
    }


@pytest.fixture
def cli(cli_env: dict[str, str | None]) -> Iterator[Cli]:
    """`cli("events", "list", "--json")`: runs the command as a user would, never a traceback."""

    def run(*args: str, input: str | None = None, **env: str | None) -> Ran:
        get_settings.cache_clear()  # each run reads its environment, like a new process
        merged = {**cli_env, **{k.upper(): v for k, v in env.items()}}
        with process_logging_kept():
            result: Result = CliRunner().invoke(app, list(args), env=merged, input=input)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise AssertionError(
                "command raised instead of answering:\n"
                + "".join(traceback.format_exception(result.exception))
            )
        return Ran(result.exit_code, result.stdout, result.stderr)

    yield run
    get_settings.cache_clear()


@contextmanager
def process_logging_kept() -> Iterator[None]:
    """The root logger's handlers and level as they were before a command ran in-process.

    A command that runs a process (`outbox dev`, `serve`) configures logging: a handler on
    the sys.stderr of the moment, which CliRunner replaces with a capture it closes when
    the command returns. Left in place, that handler would take the later tests' log lines
    (an in-process ingress's batch lines) to a closed file.
    """
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def stored(engine: Engine, *, now: datetime | None = None, **kwargs: Any) -> int:
    """One new pending row (see tests.factories.incoming for the arguments); returns its id."""
    [result] = record(engine, incoming(**kwargs), now=now)
    return result.id


def finish(sessions: sessionmaker[Session], event_id: int, *, at: datetime | None = None) -> None:
    """Process a row to `done`, as a worker would."""
    at = at or utcnow()
    with transaction(sessions) as session:
        [claimed] = claiming.claim(session, now=at, lease=LEASE, ids=[event_id])
        assert finishing.mark_done(session, claimed, at)


def skip(sessions: sessionmaker[Session], event_id: int, *, at: datetime | None = None) -> None:
    at = at or utcnow()
    with transaction(sessions) as session:
        [claimed] = claiming.claim(session, now=at, lease=LEASE, ids=[event_id])
        assert finishing.mark_skipped(session, claimed, "no handler", at)


def kill(
    sessions: sessionmaker[Session],
    event_id: int,
    error: str = "boom",
    *,
    at: datetime | None = None,
) -> None:
    """Fail a row's only attempt, so it is `dead` with its error logged."""
    at = at or utcnow()
    with transaction(sessions) as session:
        [claimed] = claiming.claim(session, now=at, lease=LEASE, ids=[event_id])
        finishing.fail(session, claimed, error, policy=ONE_TRY, now=at)


def claim_now(sessions: sessionmaker[Session], event_id: int) -> None:
    """Leave a row `processing`, as a worker in the middle of it would."""
    with transaction(sessions) as session:
        assert claiming.claim(session, now=utcnow(), lease=LEASE, ids=[event_id])


def purged_event(engine: Engine, sessions: sessionmaker[Session]) -> int:
    """A row done 100 days ago whose body `purge --older-than 90d` removed: a tombstone."""
    now = utcnow()
    event_id = stored(engine, now=now - timedelta(days=100))
    finish(sessions, event_id, at=now - timedelta(days=100))
    with transaction(sessions) as session:
        operator_writes.purge(session, older_than=now - timedelta(days=90), now=now)
    return event_id


def row(sessions: sessionmaker[Session], event_id: int) -> WebhookEvent:
    with sessions() as session:
        return session.get_one(WebhookEvent, event_id)


@pytest.fixture
def credits(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Iterator[type[FakeCredit]]:
    """The fake table, created and wired into the effect registry for this test only."""
    FakeBase.metadata.create_all(engine)
    monkeypatch.setitem(EFFECT_FINDERS, "fake_credits", rows_naming_event(FakeCredit))
    yield FakeCredit
    FakeBase.metadata.drop_all(engine)
