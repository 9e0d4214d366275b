"""A GitHub or Stripe that accepts the connection and never answers: the attempt fails after
PROVIDER_TIMEOUT_SECONDS, the job or usage record goes back to the retry policy, and
neither its lease nor the worker's thread is held any longer."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import respx
from sqlalchemy.orm import Session, sessionmaker

from domain.jobs import JobStatus
from outbox.settings import Settings
from processors.jobs import JobOutcome, UsageOutcome
from tests.domain.jobs_world import REPO, World, job_settings
from tests.fakes.github import FakeGitHub
from tests.fakes.stripe import FakeStripe

TIMEOUT = 0.5  #: seconds: PROVIDER_TIMEOUT_SECONDS in these tests
SLACK = 2.0  #: seconds the attempt may take beyond its timeout (the database, a loaded machine)


@contextmanager
def silent_api() -> Iterator[str]:
    """A server whose kernel accepts connections and requests, and that never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)  # never accepted: the handshake completes, nothing is ever read
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


@contextmanager
def world_with(sessions: sessionmaker[Session], settings: Settings, **api: str) -> Iterator[World]:
    with silent_api() as silent, respx.mock(assert_all_called=False) as router:
        router.route(url__startswith=silent).pass_through()
        github = FakeGitHub(router)
        github.add_repo(REPO)
        urls = {name: silent if url == "silent" else url for name, url in api.items()}
        changed = job_settings(settings, provider_timeout_seconds=TIMEOUT, **urls)
        yield World(sessions, changed, github, FakeStripe(router))


def timed(attempt):  # type: ignore[no-untyped-def]
    started = time.monotonic()
    outcome = attempt()
    return outcome, time.monotonic() - started


def test_a_github_that_never_answers_fails_the_attempt_and_the_job_is_retried(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    with world_with(sessions, settings, github_api_url="silent") as world:
        world.install()
        job_id = world.submit()
        outcome, took = timed(lambda: world.work(job_id))
        assert outcome is JobOutcome.RETRY
        assert took < TIMEOUT + SLACK
        job = world.job(job_id)
        assert job.status == JobStatus.VALIDATED.value and job.lease_expires_at is None
        assert "Timeout" in (job.last_error or "")


def test_a_stripe_that_never_answers_fails_the_report_and_it_is_retried(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    with world_with(sessions, settings, stripe_api_base="silent") as world:
        world.install()
        world.link_customer()
        assert world.work(world.submit(required_credits="2")) is JobOutcome.SUCCESS
        [record] = world.usage()
        outcome, took = timed(lambda: world.report(record.id))
        assert outcome is UsageOutcome.RETRY
        assert took < TIMEOUT + SLACK
        [record] = world.usage()
        assert record.reported_at is None and record.lease_expires_at is None
        assert record.attempts == 1
