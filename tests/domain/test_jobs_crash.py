"""A worker killed (SIGKILL) after GitHub opened the PR and before our commit: one PR, one debit."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from outbox.db import utcnow
from outbox.settings import Settings
from processors.jobs import JobOutcome
from tests.domain.jobs_world import REPO, World, job_settings, private_key
from tests.fakes.providers import FakeProviders

ROOT = Path(__file__).resolve().parents[2]
LEASE_SECONDS = 1  #: seconds the dead worker's lease holds the job


@pytest.fixture
def served_world(
    sessions: sessionmaker[Session], settings: Settings, tmp_path: Path
) -> Iterator[tuple[World, dict[str, str]]]:
    with FakeProviders() as fake:
        fake.github.add_repo(REPO)
        config = job_settings(
            settings,
            github_api_url=fake.url,
            stripe_api_base=fake.url,
            lease_seconds=LEASE_SECONDS,
        )
        key_file = tmp_path / "app.pem"
        key_file.write_text(private_key())
        env = {
            **os.environ,
            "DATABASE_URL": config.database_url,
            "GITHUB_APP_ID": str(config.github_app_id),
            "GITHUB_APP_PRIVATE_KEY_FILE": str(key_file),
            "GITHUB_API_URL": fake.url,
            "LEASE_SECONDS": str(LEASE_SECONDS),
        }
        env.pop("GITHUB_APP_PRIVATE_KEY", None)
        world = World(sessions, config, fake.github, fake.stripe)
        world.now = utcnow()
        yield world, env


@pytest.mark.slow
def test_killed_after_githubs_answer_then_retried_one_pr_one_debit(
    served_world: tuple[World, dict[str, str]],
) -> None:
    world, env = served_world
    world.install()
    world.link_customer()
    job_id = world.submit()

    child = subprocess.run(
        [sys.executable, "-m", "tests.domain.crash_worker", str(job_id)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert child.returncode == -9, child.stderr.decode()
    assert len(world.github.pulls(REPO)) == 1
    assert world.job(job_id).status == "running"
    assert world.totals().debits == 0

    world.now = utcnow()
    world.later(LEASE_SECONDS + 1)
    assert world.work(job_id) is JobOutcome.SUCCESS
    [record] = world.usage()
    world.report(record.id)

    job = world.job(job_id)
    assert (job.status, job.pr_number, job.attempts) == ("success", 1, 2)
    totals = world.totals()
    assert (totals.pull_requests, totals.debits, totals.usage_records, totals.meter_events) == (
        1,
        1,
        1,
        1,
    )
    assert totals.balance == world.settings.welcome_credits - Decimal(3)
