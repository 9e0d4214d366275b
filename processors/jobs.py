"""Working on pull-request jobs and reporting their usage: the steps around the network calls.

`work_on_job` is one attempt at a job, in three steps:
1. claim it under a lease, validating it on its first claim (one transaction);
2. open its pull request on GitHub (no transaction: the network is slow and may fail);
3. record the outcome (one transaction, guarded by the lease): success with its one debit
   and its usage record, a retry later (free), or a failure (reservation released).
A crash between 2 and 3 leaves the job `running` under a lease that runs out; the next
claim opens nothing new, because GitHub's pull request is found by the job's head branch.
When that claim finds the job may not go on (its installation was suspended or removed
meanwhile, or its worker died on every attempt), step 2 only looks for the pull request:
found, the job succeeds all the same (it was delivered); not found, it fails.

`report_usage_record` does the same for one usage record and the Stripe meter.

The actors `run_pr_job` and `report_usage` are rung by the sweeper (sweep sources
"pr_jobs" and "usage_records", registered below) and, after a job's success, by the job's
own actor for its usage record. Messages carry ids only: the rows are the truth.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import dramatiq
import stripe
from githubkit import AppAuthStrategy, GitHub
from prometheus_client import Counter
from sqlalchemy.orm import Session, sessionmaker

from domain import job_queue, jobs, usage, usage_reports
from domain.clients import NotConfigured, github_app, stripe_client
from domain.pull_requests import (
    GitHubRefused,
    GitHubUnavailable,
    OpenedPullRequest,
    find_pull_request,
    open_pull_request,
)
from outbox.claiming import new_lease_owner
from outbox.db import transaction, utcnow
from outbox.retry import RetryPolicy
from outbox.settings import Settings
from processors import runtime
from processors.runtime import Runtime
from processors.sweeper import SweepSource, register_sweep_source

log = logging.getLogger("outbox.jobs")

JOBS_QUEUE = "pr_jobs"
USAGE_QUEUE = "usage"

JOB_ATTEMPTS = Counter(
    "outbox_pr_job_attempts", "PR job attempts by outcome (success, retry, failed, …)", ["outcome"]
)
USAGE_REPORTS = Counter(
    "outbox_usage_reports", "Meter event reports by outcome (reported, retry, …)", ["outcome"]
)

Clock = Callable[[], datetime]


class JobOutcome(StrEnum):
    SUCCESS = "success"
    RETRY = "retry"
    FAILED = "failed"
    NOT_DUE = "not-due"  #: another worker has it, or it is finished
    LEASE_LOST = "lease-lost"  #: took too long; the job's new owner finishes it


class UsageOutcome(StrEnum):
    REPORTED = "reported"
    ALREADY_REPORTED = "already-reported"
    RETRY = "retry"
    NOT_DUE = "not-due"
    LEASE_LOST = "lease-lost"


@dataclass(frozen=True)
class JobWork:
    """What an attempt needs: the database, the settings, the policy, the API clients."""

    sessions: sessionmaker[Session]
    settings: Settings
    policy: RetryPolicy
    github: Callable[[], GitHub[AppAuthStrategy]]
    stripe: Callable[[], stripe.StripeClient]
    clock: Clock = utcnow

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.settings.lease_seconds)

    @property
    def resend_window(self) -> timedelta:
        return timedelta(hours=self.settings.usage_resend_window_hours)


def work_on_job(work: JobWork, job_id: int) -> JobOutcome:
    """One attempt at job `job_id` (nothing happens when it is not due)."""
    owner = new_lease_owner()
    with transaction(work.sessions) as session:
        claim = job_queue.claim_job(
            session, job_id, now=work.clock(), lease=work.lease, owner=owner, policy=work.policy
        )
    if claim.failed is not None:
        log.info("job failed validation", extra={"job_id": job_id, "reason": claim.failed})
        return JobOutcome.FAILED
    if claim.claimed is None:
        return JobOutcome.NOT_DUE
    claimed = claim.claimed
    if claimed.blocked is not None:
        return _settle_blocked(work, claimed, claimed.blocked)
    try:
        opened = open_pull_request(work.github(), claimed.plan)
    except GitHubRefused as refused:
        return _failed(work, claimed, str(refused))
    except GitHubUnavailable as unavailable:
        return _retry(work, claimed, str(unavailable), unavailable.retry_after)
    except NotConfigured as missing:
        # No retry can succeed before an operator configures the App: fail now, releasing
        # the hold (`outbox jobs retry` validates it again once the App is configured).
        log.warning("job cannot run", extra={"job_id": job_id, "reason": str(missing)})
        return _failed(work, claimed, f"no GitHub App configured: {missing}")
    except Exception as exc:  # a technical error takes nothing and is tried again
        log.exception("job attempt broke", extra={"job_id": job_id})
        return _retry(work, claimed, f"{type(exc).__name__}: {exc}", None)
    return _succeeded(work, claimed, opened)


def _settle_blocked(work: JobWork, claimed: job_queue.ClaimedJob, blocked: str) -> JobOutcome:
    """A job that may not go on: it succeeds if an earlier attempt opened its pull request,
    else it fails (or waits, when its installation is only suspended and GitHub cannot be
    asked now)."""
    try:
        found = find_pull_request(work.github(), claimed.plan)
    except GitHubUnavailable as unavailable:
        reason = f"{blocked}; looking for its pull request: {unavailable}"
        return _retry(work, claimed, reason, unavailable.retry_after)
    except (GitHubRefused, NotConfigured) as refused:
        reason = f"{blocked}; its pull request could not be looked for: {refused}"
        if claimed.may_wait:
            return _retry(work, claimed, reason, None)
        return _failed(work, claimed, reason)
    if found is None:
        return _failed(work, claimed, blocked)
    return _succeeded(work, claimed, found)


def _succeeded(
    work: JobWork, claimed: job_queue.ClaimedJob, opened: OpenedPullRequest
) -> JobOutcome:
    job_id = claimed.id
    with transaction(work.sessions) as session:
        done = job_queue.succeed(
            session,
            claimed,
            opened,
            now=work.clock(),
            meter_event_name=work.settings.stripe_meter_event_name,
        )
    if not done:
        return JobOutcome.LEASE_LOST
    log.info(
        "job succeeded",
        extra={"job_id": job_id, "pr": opened.number, "reused": opened.reused},
    )
    return JobOutcome.SUCCESS


def _failed(work: JobWork, claimed: job_queue.ClaimedJob, reason: str) -> JobOutcome:
    with transaction(work.sessions) as session:
        done = job_queue.fail(session, claimed, reason, now=work.clock())
    log.info("job failed", extra={"job_id": claimed.id, "reason": reason})
    return JobOutcome.FAILED if done else JobOutcome.LEASE_LOST


def _retry(
    work: JobWork, claimed: job_queue.ClaimedJob, reason: str, not_before: timedelta | None
) -> JobOutcome:
    with transaction(work.sessions) as session:
        status = job_queue.retry_later(
            session, claimed, reason, now=work.clock(), policy=work.policy, not_before=not_before
        )
    log.info("job attempt failed", extra={"job_id": claimed.id, "reason": reason})
    if status is None:
        return JobOutcome.LEASE_LOST
    return JobOutcome.FAILED if status == jobs.JobStatus.FAILED else JobOutcome.RETRY


def report_usage_record(work: JobWork, record_id: int) -> UsageOutcome:
    """Report one usage record to the Stripe meter (nothing happens when it is not due)."""
    owner = new_lease_owner()
    with transaction(work.sessions) as session:
        claimed = usage_reports.claim_usage(
            session,
            record_id,
            now=work.clock(),
            lease=work.lease,
            owner=owner,
            window=work.resend_window,
        )
    if claimed is None:
        return UsageOutcome.NOT_DUE
    try:
        accepted = usage_reports.report(work.stripe(), claimed)
    except (usage_reports.StripeUnavailable, NotConfigured) as exc:
        uncertain = isinstance(exc, usage_reports.StripeUnavailable) and exc.uncertain
        with transaction(work.sessions) as session:
            kept = usage_reports.report_failed(
                session,
                claimed,
                str(exc),
                now=work.clock(),
                policy=work.policy,
                uncertain=uncertain,
                window=work.resend_window,
            )
        log.info("usage report failed", extra={"usage_id": record_id, "reason": str(exc)})
        return UsageOutcome.RETRY if kept else UsageOutcome.LEASE_LOST
    note = None if accepted else "Stripe already had this meter event"
    with transaction(work.sessions) as session:
        done = usage_reports.mark_reported(session, claimed, now=work.clock(), note=note)
    if not done:
        return UsageOutcome.LEASE_LOST
    return UsageOutcome.REPORTED if accepted else UsageOutcome.ALREADY_REPORTED


# --- actors ----------------------------------------------------------------------------------


def _work(current: Runtime) -> JobWork:
    return JobWork(
        sessions=current.sessions,
        settings=current.settings,
        policy=current.policy,
        github=lambda: github_app(current.settings),
        stripe=lambda: stripe_client(current.settings),
    )


@dramatiq.actor(queue_name=JOBS_QUEUE, max_retries=0)
def run_pr_job(job_id: int) -> None:
    """One attempt at a PR job; on success, ring the report of its usage."""
    work = _work(runtime.current())
    outcome = work_on_job(work, job_id)
    JOB_ATTEMPTS.labels(outcome.value).inc()
    if outcome is JobOutcome.SUCCESS:
        with work.sessions() as session:
            record_id = usage.record_id_for_job(session, job_id)
        if record_id is not None:
            report_usage.send(record_id)


@dramatiq.actor(queue_name=USAGE_QUEUE, max_retries=0)
def report_usage(record_id: int) -> None:
    """Report one usage record to the Stripe meter."""
    USAGE_REPORTS.labels(report_usage_record(_work(runtime.current()), record_id).value).inc()


def ring_jobs(ids: list[int]) -> None:
    for job_id in ids:
        run_pr_job.send(job_id)


def ring_usage(ids: list[int]) -> None:
    for record_id in ids:
        report_usage.send(record_id)


register_sweep_source(SweepSource("pr_jobs", find_due=job_queue.due_job_ids, enqueue=ring_jobs))
register_sweep_source(
    SweepSource("usage_records", find_due=usage_reports.due_usage_ids, enqueue=ring_usage)
)
