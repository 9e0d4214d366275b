"""PR jobs: validated with a reservation, charged once on success, never on failure."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

import processors.jobs as job_steps
from domain import job_queue, job_specs, jobs, ledger_tables
from domain.installation_repositories import RepositoryFacts, remove_repositories
from domain.installations import Installation as InstallationRow
from domain.installations import mark_deleted
from domain.pull_requests import open_pull_request
from domain.usage_reports import due_usage_ids
from outbox.claiming import new_lease_owner
from outbox.db import transaction
from processors.jobs import JobOutcome, UsageOutcome
from tests.domain.jobs_world import (
    ACCOUNT,
    CUSTOMER,
    INSTALLATION,
    REPO,
    World,
    spec,
)


def test_a_job_opens_its_pull_request_and_is_charged_once(world: World) -> None:
    world.install()
    job_id = world.submit()

    assert world.work(job_id) is JobOutcome.SUCCESS

    job = world.job(job_id)
    assert (job.status, job.pr_number, job.attempts) == ("success", 1, 1)
    assert job.pr_url == f"https://github.test/{REPO}/pull/1"
    assert job.validated_at is not None and job.finished_at is not None
    totals = world.totals()
    assert (totals.balance, totals.available, totals.debits) == (Decimal(7), Decimal(7), 1)
    assert (totals.pull_requests, totals.usage_records) == (1, 1)
    with world.sessions() as session:
        entry = session.scalar(
            select(ledger_tables.CreditEntry).where(
                ledger_tables.CreditEntry.key == jobs.charge_key(job_id)
            )
        )
        assert entry is not None and (entry.amount, entry.job_id) == (Decimal(-3), job_id)
    assert world.work(job_id) is JobOutcome.NOT_DUE
    assert world.totals() == totals


def test_a_crash_after_github_opened_the_pr_then_a_retry_charges_once(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Crash(BaseException):
        """The worker process dies right after GitHub's answer, before our commit."""

    def open_then_crash(*args: Any) -> Any:
        open_pull_request(*args)
        raise Crash

    world.install()
    world.link_customer()
    job_id = world.submit()
    monkeypatch.setattr(job_steps, "open_pull_request", open_then_crash)
    with pytest.raises(Crash):
        world.work(job_id)
    monkeypatch.undo()
    assert world.job(job_id).status == "running"
    assert world.work(job_id) is JobOutcome.NOT_DUE  # its lease still holds

    world.later(world.settings.lease_seconds + 1)
    assert world.work(job_id) is JobOutcome.SUCCESS
    [record] = world.usage()
    assert world.report(record.id) is UsageOutcome.REPORTED

    totals = world.totals()
    assert (totals.pull_requests, totals.debits, totals.usage_records) == (1, 1, 1)
    assert (totals.meter_events, totals.balance) == (1, Decimal(7))
    assert world.github.count("POST", "/git/commits") == 1


def test_three_failures_then_success_is_charged_once(world: World) -> None:
    world.install()
    job_id = world.submit()
    world.github.fail("POST", "/pulls", status=502, times=3)

    for attempt in range(1, 4):
        assert world.work(job_id) is JobOutcome.RETRY
        job = world.job(job_id)
        assert (job.status, job.attempts) == ("validated", attempt)
        assert "HTTP 502" in (job.last_error or "")
        assert world.totals().debits == 0
        assert world.totals().available == Decimal(7)  # still reserved, not taken
        assert world.work(job_id) is JobOutcome.NOT_DUE  # waits for its backoff
        world.later(world.settings.retry_max_delay_seconds)
    assert world.work(job_id) is JobOutcome.SUCCESS

    totals = world.totals()
    assert (totals.debits, totals.balance, totals.pull_requests) == (1, Decimal(7), 1)
    assert world.job(job_id).attempts == 4


def test_a_job_that_fails_for_good_is_charged_nothing(world: World) -> None:
    world.install()
    job_id = world.submit()
    world.github.fail("GET", "/pulls", status=404, body={"message": "Not Found"})

    assert world.work(job_id) is JobOutcome.FAILED

    job = world.job(job_id)
    assert job.status == "failed"
    assert f"repository {REPO} is not accessible to the App (HTTP 404" in (job.last_error or "")
    totals = world.totals()
    assert (totals.balance, totals.available, totals.debits, totals.usage_records) == (
        Decimal(10),
        Decimal(10),
        0,
        0,
    )


def test_a_job_with_no_github_app_configured_fails_at_once_and_holds_nothing(
    world: World,
) -> None:
    world.install()
    world.settings = world.settings.model_copy(update={"github_app_id": None})
    job_id = world.submit()

    assert world.work(job_id) is JobOutcome.FAILED

    job = world.job(job_id)
    assert (job.status, job.attempts) == ("failed", 1)
    assert "no GitHub App configured: GITHUB_APP_ID" in (job.last_error or "")
    totals = world.totals()
    assert (totals.balance, totals.available, totals.debits) == (Decimal(10), Decimal(10), 0)
    assert world.work(job_id) is JobOutcome.NOT_DUE  # not tried again until an operator acts


def test_a_job_that_keeps_failing_gives_up_and_is_charged_nothing(world: World) -> None:
    world.install()
    job_id = world.submit()
    world.github.fail("GET", "/pulls", status=500, times=99)

    outcomes = []
    for _ in range(world.settings.retry_max_attempts):
        outcomes.append(world.work(job_id))
        world.later(world.settings.retry_max_delay_seconds)

    assert outcomes == [JobOutcome.RETRY] * 4 + [JobOutcome.FAILED]
    assert (world.job(job_id).last_error or "").startswith("gave up after 5 attempts")
    assert world.totals().available == world.totals().balance == Decimal(10)


def test_rate_limited_job_waits_at_least_as_long_as_github_asks(world: World) -> None:
    world.install()
    job_id = world.submit()
    world.github.fail(
        "POST",
        "/git/blobs",
        status=403,
        headers={"x-ratelimit-remaining": "0", "retry-after": "900"},
        body={"message": "API rate limit exceeded"},
    )

    assert world.work(job_id) is JobOutcome.RETRY
    due = world.job(job_id).next_attempt_at
    assert due is not None and due >= world.now + timedelta(seconds=900)


def test_only_one_of_two_jobs_validates_on_one_jobs_worth_of_credits(world: World) -> None:
    world.install(credits=Decimal(3))
    first, second = world.submit(), world.submit()
    barrier = threading.Barrier(2)
    outcomes: dict[int, job_queue.ClaimOutcome] = {}

    def claim(job_id: int) -> None:
        barrier.wait()
        with transaction(world.sessions) as session:
            outcomes[job_id] = job_queue.claim_job(
                session,
                job_id,
                now=world.now,
                lease=timedelta(minutes=5),
                owner=new_lease_owner(),
                policy=world.job_work.policy,
            )

    threads = [threading.Thread(target=claim, args=(j,)) for j in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    claimed = [j for j, o in outcomes.items() if o.claimed is not None]
    refused = [o.failed for o in outcomes.values() if o.failed is not None]
    assert len(claimed) == 1
    assert refused == [f"account {ACCOUNT} cannot pay 3.0000 credits (0.0000 available)"]
    assert world.totals().available == Decimal(0)
    assert world.job(claimed[0]).status == "running"


def test_a_failed_job_releases_its_reservation_for_the_next(world: World) -> None:
    world.install(credits=Decimal(3))
    first = world.submit(repository="Codertocat/Gone")
    second = world.submit()
    world.github.fail("GET", "/pulls", status=404)

    with transaction(world.sessions) as session:
        # The second job's repository is fine; the first cannot be reached on GitHub.
        from domain.installation_repositories import add_repositories

        add_repositories(
            session,
            INSTALLATION,
            [RepositoryFacts(5, "Codertocat/Gone", True)],
            now=world.now,
            event_id=None,
        )
    assert world.work(first) is JobOutcome.FAILED
    assert world.work(second) is JobOutcome.SUCCESS
    assert world.totals().balance == Decimal(0)


def test_installation_removed_while_the_job_waits_fails_it_with_the_reason(
    world: World,
) -> None:
    world.install()
    job_id = world.submit()
    world.github.fail("POST", "/git/trees", status=500)
    assert world.work(job_id) is JobOutcome.RETRY
    with transaction(world.sessions) as session:
        installation = session.get(InstallationRow, INSTALLATION)
        assert installation is not None
        mark_deleted(installation, now=world.now, event_id=None)
    world.later(world.settings.retry_max_delay_seconds)
    calls = len(world.github.calls)

    assert world.work(job_id) is JobOutcome.FAILED

    job = world.job(job_id)
    assert job.last_error == (f"installation {INSTALLATION} was removed (the App was uninstalled)")
    # The first attempt may have opened the pull request: only that is looked for.
    assert world.github.calls[calls:] == [("GET", f"/repos/{REPO}/pulls")]
    assert world.totals().available == world.totals().balance == Decimal(10)


def test_repository_removed_before_the_job_ran_fails_it(world: World) -> None:
    world.install()
    job_id = world.submit()
    with transaction(world.sessions) as session:
        remove_repositories(
            session,
            INSTALLATION,
            [RepositoryFacts(186853002, REPO, False)],
            now=world.now,
            event_id=None,
        )
    assert world.work(job_id) is JobOutcome.FAILED
    assert world.job(job_id).last_error == (
        f"repository {REPO} was removed from installation {INSTALLATION}"
    )


def test_job_for_an_installation_of_another_account_is_refused(world: World) -> None:
    world.install()
    with transaction(world.sessions) as session:
        from domain.account_opening import ensure_account

        ensure_account(session, 42, login="mallory", now=world.now, welcome_credits=Decimal(5))
    job_id = world.submit(account="mallory")

    assert world.work(job_id) is JobOutcome.FAILED
    assert world.job(job_id).last_error == (
        f"installation {INSTALLATION} belongs to account {ACCOUNT}, not to account 42"
    )


def test_a_worker_that_lost_its_lease_writes_nothing(world: World) -> None:
    world.install()
    job_id = world.submit()
    with transaction(world.sessions) as session:
        slow = job_queue.claim_job(
            session,
            job_id,
            now=world.now,
            lease=timedelta(seconds=1),
            owner="slow",
            policy=world.job_work.policy,
        ).claimed
    assert slow is not None
    world.later(5)
    assert world.work(job_id) is JobOutcome.SUCCESS  # another worker took it over

    opened = open_pull_request(world.job_work.github(), slow.plan)
    with transaction(world.sessions) as session:
        assert not job_queue.succeed(session, slow, opened, now=world.now, meter_event_name="m")
        assert (
            job_queue.retry_later(session, slow, "x", now=world.now, policy=world.job_work.policy)
            is None
        )
    assert world.totals().debits == 1


def test_a_free_job_takes_no_credits_and_records_no_usage(world: World) -> None:
    world.install()
    job_id = world.submit(required_credits="0")
    assert world.work(job_id) is JobOutcome.SUCCESS
    totals = world.totals()
    assert (totals.balance, totals.debits, totals.usage_records) == (Decimal(10), 0, 0)


def test_retry_puts_a_failed_job_back_and_it_reserves_anew(world: World) -> None:
    world.install()
    job_id = world.submit()
    world.github.fail("GET", "/pulls", status=403, body={"message": "Forbidden"})
    assert world.work(job_id) is JobOutcome.FAILED

    with transaction(world.sessions) as session:
        jobs.retry_now(session, job_id, now=world.now)
    assert world.job(job_id).status == "pending"
    assert world.work(job_id) is JobOutcome.SUCCESS
    job = world.job(job_id)
    assert job.hold_key == f"pr_job:{job_id}:2"
    assert world.totals().debits == 1


def test_retry_refuses_a_job_that_succeeded(world: World) -> None:
    world.install()
    job_id = world.submit()
    world.work(job_id)
    with transaction(world.sessions) as session, pytest.raises(jobs.RetryRefused):
        jobs.retry_now(session, job_id, now=world.now)


def test_submitting_the_same_key_twice_is_one_job(world: World) -> None:
    world.install()
    assert world.submit(key="batch-7") == world.submit(key="batch-7")
    with pytest.raises(jobs.JobRejected, match="already used by job"):
        world.submit(key="batch-7", files=[{"path": "other.txt", "content": "x"}])


def test_submitting_for_an_unknown_account_is_rejected(world: World) -> None:
    with pytest.raises(jobs.JobRejected, match="unknown account: nobody"):
        world.submit(account="nobody")


def test_head_branch_is_derived_from_the_job(world: World) -> None:
    world.install()
    job_id = world.submit()
    branch = world.job(job_id).head_branch
    assert (
        branch.startswith(f"outbox/job-{job_id}-")
        and len(branch) == len(f"outbox/job-{job_id}-") + 8
    )
    world.work(job_id)
    assert world.github.pulls(REPO)[0]["head"]["ref"] == branch


def test_usage_of_an_account_without_customer_waits_until_linked(world: World) -> None:
    world.install()
    world.work(world.submit())
    [record] = world.usage()

    assert world.report(record.id) is UsageOutcome.NOT_DUE
    assert world.stripe.meter_requests == []
    world.link_customer()
    assert world.report(record.id) is UsageOutcome.REPORTED

    [event] = world.stripe.meter_events.values()
    assert event["payload"] == {"stripe_customer_id": CUSTOMER, "value": "3"}
    assert event["event_name"] == "pr_jobs"
    [request] = world.stripe.meter_requests
    assert request["identifier"] == request["idempotency_key"] == f"usage:pr_job:{record.job_id}"
    [reported] = world.usage()
    assert reported.reported_at == world.now and reported.stripe_customer_id == CUSTOMER


def test_usage_already_known_to_stripe_is_marked_reported(world: World) -> None:
    world.install()
    world.link_customer()
    world.work(world.submit())
    [record] = world.usage()
    world.stripe.meter_events[record.identifier] = {"sent": "by an attempt whose answer was lost"}

    assert world.report(record.id) is UsageOutcome.ALREADY_REPORTED
    [reported] = world.usage()
    assert reported.reported_at is not None
    assert reported.last_error == "Stripe already had this meter event"


def test_usage_report_is_retried_until_stripe_accepts(world: World) -> None:
    world.install()
    world.link_customer()
    world.work(world.submit(required_credits="2.5"))
    [record] = world.usage()
    world.stripe.fail("POST", "/meter_events", status=500)
    world.stripe.fail("POST", "/meter_events", status=429)

    assert world.report(record.id) is UsageOutcome.RETRY
    assert world.report(record.id) is UsageOutcome.NOT_DUE  # backoff
    world.later(3600)
    assert world.report(record.id) is UsageOutcome.RETRY
    world.later(3600)
    assert world.report(record.id) is UsageOutcome.REPORTED

    [event] = world.stripe.meter_events.values()
    assert event["payload"]["value"] == "2.5"
    assert len({r["identifier"] for r in world.stripe.meter_requests}) == 1
    assert world.report(record.id) is UsageOutcome.NOT_DUE


def test_due_sources_find_waiting_and_abandoned_work(world: World) -> None:
    world.install()
    world.link_customer()
    done, waiting = world.submit(), world.submit()
    world.work(done)
    records = [r.id for r in world.usage()]
    with world.sessions() as session:
        assert job_queue.due_job_ids(session, world.now, 10) == [waiting]
        assert due_usage_ids(session, world.now, 10) == records
    with transaction(world.sessions) as session:
        job_queue.claim_job(
            session,
            waiting,
            now=world.now,
            lease=timedelta(seconds=30),
            owner="gone",
            policy=world.job_work.policy,
        )
    with world.sessions() as session:
        assert job_queue.due_job_ids(session, world.now, 10) == []
        later = world.now + timedelta(seconds=31)
        assert job_queue.due_job_ids(session, later, 10) == [waiting]  # its worker vanished


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"account": None}, "account: "),
        ({"installation": "957387"}, "installation: a positive"),
        ({"repository": "just-a-name"}, "repository: expected 'owner/name'"),
        ({"title": "  "}, "title: a non-empty string"),
        ({"title": "x" * 300}, "title: at most 256"),
        ({"base_branch": "../main"}, "base_branch: a branch name"),
        ({"files": []}, "files: a non-empty list"),
        ({"files": [{"path": "/etc/passwd", "content": "x"}]}, r"files\[0\].path"),
        ({"files": [{"path": "a/../b", "content": "x"}]}, r"files\[0\].path"),
        ({"files": [{"path": "a", "content": "x"}, {"path": "a", "delete": True}]}, "twice"),
        ({"files": [{"path": "a", "content": "x", "delete": True}]}, "either content"),
        ({"files": [{"path": "a"}]}, "either content"),
        ({"files": [{"path": "a", "content": 3}]}, "either content"),
        ({"required_credits": None}, "required_credits: required"),
        ({"required_credits": -1}, "must not be negative"),
        ({"required_credits": "1e3"}, "required_credits: "),
        ({"required_credits": 1.5}, "required_credits: "),
        ({"required_credits": "0.00001"}, "decimal places"),
        ({"colour": "blue"}, "unknown field"),
    ],
)
def test_a_bad_spec_names_the_field(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(job_specs.InvalidJobSpec, match=message):
        spec(**changes)


def test_spec_from_json_reads_fractions_exactly() -> None:
    parsed = job_specs.load_spec(
        b'{"account": 1, "installation": 2, "repository": "a/b", "title": "t",'
        b' "files": [{"path": "x", "delete": true}], "required_credits": 2.5}'
    )
    assert parsed.required_credits == Decimal("2.5")
    assert parsed.base_branch == ""  # the repository's default branch
    with pytest.raises(job_specs.InvalidJobSpec, match="not valid JSON"):
        job_specs.load_spec(b"{")
