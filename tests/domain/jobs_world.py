"""A small world for PR job tests: an installed App, an account, a fake GitHub and Stripe.

`World.work()` is one worker attempt at a job (processors/jobs.py) with a clock the test
moves; `World.totals()` is what money-minded assertions need in one call.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any

import pytest
import respx
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from domain import balances, job_specs, jobs, ledger_tables
from domain.account_opening import ensure_account
from domain.accounts import link_customer
from domain.clients import github_app, stripe_client
from domain.installation_repositories import RepositoryFacts, add_repositories
from domain.installations import InstallationFacts, record_installation
from domain.usage import UsageRecord
from outbox.db import transaction
from outbox.retry import RetryPolicy
from outbox.settings import Settings
from processors.jobs import JobOutcome, JobWork, UsageOutcome, report_usage_record, work_on_job
from tests.fakes.github import API_URL, FakeGitHub, throwaway_private_key
from tests.fakes.stripe import STRIPE_BASE, FakeStripe

ACCOUNT = 21031067
LOGIN = "Codertocat"
INSTALLATION = 957387
REPO = "Codertocat/Hello-World"
CUSTOMER = "cus_codertocat"
START = datetime(2026, 12, 1, 21, 0, tzinfo=UTC)
_app_ids = itertools.count(700_001)


@lru_cache(maxsize=1)
def private_key() -> str:
    return throwaway_private_key()


def job_settings(settings: Settings, **overrides: Any) -> Settings:
    """The test's settings with a GitHub App (an id of its own: tokens are cached per App)."""
    values: dict[str, Any] = {
        "github_app_id": str(next(_app_ids)),
        "github_app_private_key": private_key(),
        "github_api_url": API_URL,
        "stripe_api_key": "sk_test_jobs",
        "stripe_api_base": STRIPE_BASE,
        "stripe_meter_event_name": "pr_jobs",
        "welcome_credits": Decimal(10),
        "retry_base_seconds": 10.0,
        "retry_max_attempts": 5,
    }
    values.update(overrides)
    return Settings(**{**settings.model_dump(), **values})


def spec(**changes: Any) -> job_specs.JobSpec:
    document: dict[str, Any] = {
        "account": LOGIN,
        "installation": INSTALLATION,
        "repository": REPO,
        "base_branch": "main",
        "title": "Add the linter configuration",
        "body": "Opened by a job.",
        "files": [{"path": ".ruff.toml", "content": "line-length = 100\n"}],
        "required_credits": 3,
    }
    document.update(changes)
    return job_specs.parse_spec(document)


@dataclass
class Totals:
    balance: Decimal
    available: Decimal
    debits: int
    usage_records: int
    pull_requests: int
    meter_events: int


@dataclass
class World:
    sessions: sessionmaker[Session]
    settings: Settings
    github: FakeGitHub
    stripe: FakeStripe
    now: datetime = START
    _work: JobWork | None = field(default=None, repr=False)

    @property
    def job_work(self) -> JobWork:
        if self._work is None:
            self._work = JobWork(
                sessions=self.sessions,
                settings=self.settings,
                policy=RetryPolicy.from_settings(self.settings),
                github=lambda: github_app(self.settings),
                stripe=lambda: stripe_client(self.settings),
                clock=lambda: self.now,
            )
        return self._work

    def install(self, *, credits: Decimal | None = None) -> None:
        """The App installed by the account on REPO (and the account made, with its credits)."""
        with transaction(self.sessions) as session:
            ensure_account(
                session,
                ACCOUNT,
                login=LOGIN,
                kind="User",
                now=self.now,
                welcome_credits=self.settings.welcome_credits if credits is None else credits,
            )
            record_installation(
                session,
                InstallationFacts(INSTALLATION, ACCOUNT, LOGIN, "User", 1, "selected", {}, False),
                now=self.now,
                event_id=None,
            )
            add_repositories(
                session,
                INSTALLATION,
                [RepositoryFacts(186853002, REPO, False)],
                now=self.now,
                event_id=None,
            )

    def link_customer(self) -> None:
        with transaction(self.sessions) as session:
            link_customer(session, ACCOUNT, CUSTOMER, now=self.now)

    def submit(self, **changes: Any) -> int:
        with transaction(self.sessions) as session:
            return jobs.submit_job(session, spec(**changes), now=self.now).id

    def work(self, job_id: int) -> JobOutcome:
        return work_on_job(self.job_work, job_id)

    def report(self, record_id: int) -> UsageOutcome:
        return report_usage_record(self.job_work, record_id)

    def later(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def job(self, job_id: int) -> jobs.PrJob:
        with self.sessions() as session:
            job = jobs.get_job(session, job_id)
            assert job is not None
            return job

    def usage(self) -> list[UsageRecord]:
        with self.sessions() as session:
            return list(session.scalars(select(UsageRecord).order_by(UsageRecord.id)))

    def totals(self) -> Totals:
        with self.sessions() as session:
            debits = session.scalar(
                select(func.count())
                .select_from(ledger_tables.CreditEntry)
                .where(ledger_tables.CreditEntry.key.like("pr_job:%"))
            )
            records = session.scalar(select(func.count()).select_from(UsageRecord))
            return Totals(
                balance=balances.balance(session, ACCOUNT),
                available=balances.available(session, ACCOUNT),
                debits=debits or 0,
                usage_records=records or 0,
                pull_requests=len(self.github.pulls(REPO)),
                meter_events=len(self.stripe.meter_events),
            )


@pytest.fixture
def world(sessions: sessionmaker[Session], settings: Settings) -> Iterator[World]:
    with respx.mock(assert_all_called=False) as router:
        github = FakeGitHub(router)
        github.add_repo(REPO)
        yield World(sessions, job_settings(settings), github, FakeStripe(router))
