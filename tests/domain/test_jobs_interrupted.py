"""Jobs whose worker died or whose lease ran out: a delivered pull request is charged once,
whatever became of the installation since; a worker that keeps dying is given up on."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

import processors.jobs as job_steps
from domain.installations import Installation, mark_deleted, mark_suspended
from domain.pull_requests import open_pull_request
from outbox.db import transaction
from processors.jobs import JobOutcome
from tests.domain.jobs_world import INSTALLATION, REPO, World


class WorkerDied(BaseException):
    """The worker process dies: nothing after this point runs, no commit, no rollback."""


def open_then_die(*args: Any) -> Any:
    open_pull_request(*args)
    raise WorkerDied


def die(*_args: Any) -> Any:
    raise WorkerDied


def died_after_github_opened_the_pr(world: World, monkeypatch: pytest.MonkeyPatch) -> int:
    """A job whose worker died between GitHub's answer and its commit; its lease ran out."""
    world.install()
    world.link_customer()
    job_id = world.submit()
    monkeypatch.setattr(job_steps, "open_pull_request", open_then_die)
    with pytest.raises(WorkerDied):
        world.work(job_id)
    monkeypatch.undo()
    assert len(world.github.pulls(REPO)) == 1 and world.job(job_id).status == "running"
    world.later(world.settings.lease_seconds + 1)
    return job_id


def change_installation(world: World, change: Callable[[Installation], None]) -> None:
    with transaction(world.sessions) as session:
        installation = session.get(Installation, INSTALLATION)
        assert installation is not None
        change(installation)


def assert_charged_once(world: World, job_id: int) -> None:
    job = world.job(job_id)
    assert (job.status, job.pr_number, job.last_error) == ("success", 1, None)
    totals = world.totals()
    assert (totals.pull_requests, totals.debits, totals.usage_records) == (1, 1, 1)
    assert (totals.balance, totals.available) == (Decimal(7), Decimal(7))


def test_a_delivered_pr_is_charged_once_though_the_installation_was_suspended_since(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = died_after_github_opened_the_pr(world, monkeypatch)
    change_installation(world, lambda i: mark_suspended(i, True, now=world.now, event_id=None))

    assert world.work(job_id) is JobOutcome.SUCCESS

    assert_charged_once(world, job_id)
    assert world.github.count("POST", "/git/commits") == 1


def test_a_delivered_pr_is_charged_once_though_the_installation_was_removed_since(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = died_after_github_opened_the_pr(world, monkeypatch)
    change_installation(world, lambda i: mark_deleted(i, now=world.now, event_id=None))

    assert world.work(job_id) is JobOutcome.SUCCESS

    assert_charged_once(world, job_id)


def test_a_job_suspended_on_github_waits_with_its_hold_and_is_charged_once_lifted(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = died_after_github_opened_the_pr(world, monkeypatch)
    change_installation(world, lambda i: mark_suspended(i, True, now=world.now, event_id=None))
    world.github.suspend(INSTALLATION)  # GitHub refuses the App's calls: nothing can be seen

    assert world.work(job_id) is JobOutcome.RETRY
    job = world.job(job_id)
    assert job.status == "validated"
    assert (job.last_error or "").startswith(f"installation {INSTALLATION} is suspended; its pull")
    assert (world.totals().available, world.totals().debits) == (Decimal(7), 0)  # still held

    change_installation(world, lambda i: mark_suspended(i, False, now=world.now, event_id=None))
    world.github.suspend(INSTALLATION, False)
    world.later(world.settings.retry_max_delay_seconds)
    assert world.work(job_id) is JobOutcome.SUCCESS
    assert_charged_once(world, job_id)


def test_a_job_without_its_pr_fails_with_the_reason_when_the_installation_was_removed(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.install()
    job_id = world.submit()
    monkeypatch.setattr(job_steps, "open_pull_request", die)  # dies before asking GitHub
    with pytest.raises(WorkerDied):
        world.work(job_id)
    monkeypatch.undo()
    change_installation(world, lambda i: mark_deleted(i, now=world.now, event_id=None))
    world.later(world.settings.lease_seconds + 1)

    assert world.work(job_id) is JobOutcome.FAILED

    job = world.job(job_id)
    assert job.last_error == f"installation {INSTALLATION} was removed (the App was uninstalled)"
    assert world.github.count("POST", "/pulls") == 0
    totals = world.totals()
    assert (totals.balance, totals.available, totals.debits) == (Decimal(10), Decimal(10), 0)


def test_a_job_whose_worker_dies_every_time_fails_after_its_attempts_and_frees_its_hold(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.install()
    job_id = world.submit()
    monkeypatch.setattr(job_steps, "open_pull_request", die)
    monkeypatch.setattr(job_steps, "find_pull_request", die, raising=False)
    claims = 0
    while world.job(job_id).status != "failed" and claims < 20:
        claims += 1
        try:
            world.work(job_id)
        except WorkerDied:
            world.later(world.settings.lease_seconds + 1)

    attempts = world.settings.retry_max_attempts
    assert claims == attempts + 2  # each attempt, one last look for a PR, then the claim that fails
    job = world.job(job_id)
    assert job.status == "failed"
    assert job.last_error == (
        f"gave up after {attempts} attempts: the worker died or its lease ran out "
        "while working on the job"
    )
    totals = world.totals()
    assert (totals.balance, totals.available, totals.debits) == (Decimal(10), Decimal(10), 0)


def test_a_job_whose_worker_died_on_its_last_attempt_after_opening_the_pr_is_charged(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.install()
    world.link_customer()
    job_id = world.submit()
    monkeypatch.setattr(job_steps, "open_pull_request", die)
    for _ in range(world.settings.retry_max_attempts - 1):
        with pytest.raises(WorkerDied):
            world.work(job_id)
        world.later(world.settings.lease_seconds + 1)
    monkeypatch.setattr(job_steps, "open_pull_request", open_then_die)
    with pytest.raises(WorkerDied):
        world.work(job_id)  # the last attempt: GitHub opened the PR, then the worker died
    monkeypatch.undo()
    world.later(world.settings.lease_seconds + 1)

    assert world.work(job_id) is JobOutcome.SUCCESS
    assert_charged_once(world, job_id)
