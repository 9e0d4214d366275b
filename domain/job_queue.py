"""The job queue: a worker's claim of a due job under a lease, and the guarded transitions
that finish the attempt (succeed, fail, retry later).

A claim validates a job the first time (its installation belongs to its account; its
credits are reserved with a hold, domain/holds.py). Every transition is one guarded UPDATE
on the row (status and lease owner), so two workers never both move a job; a transition
whose lease is no longer the caller's writes nothing. Callers pass the session and the
time; nothing here commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from domain import balances, holds, installations, ledger
from domain.account_locks import lock_account
from domain.jobs import JobStatus, PrJob, charge_key
from domain.pull_requests import OpenedPullRequest, PullRequestPlan
from domain.usage import record_usage
from outbox.handling import RetryPolicy


@dataclass(frozen=True)
class ClaimedJob:
    """A running job this worker owns, with what GitHub needs (a plain snapshot, no session)."""

    id: int
    lease_owner: str
    attempts: int
    plan: PullRequestPlan
    #: Why the job must not open anything now (its installation is no longer usable, or
    #: its attempts are spent); the worker only looks for the pull request an earlier
    #: attempt may have opened.
    blocked: str | None = None
    #: The block may lift (a suspended installation): when the pull request cannot be looked
    #: for now, the job waits (reservation kept) instead of failing.
    may_wait: bool = False


@dataclass(frozen=True)
class ClaimOutcome:
    """What a claim did: `claimed` to run now, or the job failed validation (`failed`)."""

    claimed: ClaimedJob | None = None
    failed: str | None = None


def _due(now: datetime) -> Any:
    waiting = and_(
        PrJob.status.in_([JobStatus.PENDING.value, JobStatus.VALIDATED.value]),
        PrJob.next_attempt_at <= now,
    )
    # A running job whose lease ran out lost its worker (a crash, maybe after GitHub opened
    # the pull request): it is taken again, and the lookup by head branch finds that PR.
    abandoned = and_(PrJob.status == JobStatus.RUNNING.value, PrJob.lease_expires_at <= now)
    return or_(waiting, abandoned)


def due_job_ids(session: Session, now: datetime, limit: int) -> list[int]:
    """Jobs a worker should take now, oldest first (a sweep source)."""
    return list(
        session.scalars(
            select(PrJob.id).where(_due(now)).order_by(PrJob.next_attempt_at, PrJob.id).limit(limit)
        )
    )


def claim_job(
    session: Session,
    job_id: int,
    *,
    now: datetime,
    lease: timedelta,
    owner: str,
    policy: RetryPolicy,
) -> ClaimOutcome:
    """Take a due job under a lease; validate it on its first claim; leave it `running`.

    A job an earlier attempt started is claimed even when it may not go on (its
    installation is unusable, or its worker died on each of its `policy`'s attempts), with
    the reason in `blocked`: its pull request may exist. Returns an empty outcome when the
    job is not due (another worker has it, or it is done).
    """
    taken = session.execute(
        update(PrJob)
        .where(PrJob.id == job_id, _due(now))
        .values(lease_owner=owner, lease_expires_at=now + lease)
        .execution_options(synchronize_session=False)
    )
    if taken.rowcount != 1:  # type: ignore[attr-defined]
        return ClaimOutcome()
    job = session.execute(
        select(PrJob).where(PrJob.id == job_id).execution_options(populate_existing=True)
    ).scalar_one()
    unusable = installations.why_unusable(session, job.installation_id, job.repository)
    # A job never started cannot have a pull request: an unusable installation fails it.
    reason = unusable if job.started_at is None else None
    if reason is None and job.status == JobStatus.RUNNING and job.attempts > policy.max_attempts:
        reason = _worker_died(job.attempts - 1)  # it died even in the last look for its PR
    if reason is None and job.status == JobStatus.PENDING:
        reason = _validate(session, job, now)
    if reason is not None:
        _to_failed(session, job, reason, now)
        return ClaimOutcome(failed=reason)
    blocked = unusable
    if blocked is None and job.status == JobStatus.RUNNING and policy.exhausted(job.attempts):
        blocked = _worker_died(job.attempts)
    job.status = JobStatus.RUNNING.value
    job.attempts += 1
    job.started_at = job.started_at or now
    job.next_attempt_at = None
    session.flush()
    may_wait = unusable is not None and _suspended(session, job.installation_id)
    return ClaimOutcome(claimed=_snapshot(job, owner, blocked, may_wait))


def _worker_died(attempts: int) -> str:
    return (
        f"gave up after {attempts} attempts: the worker died or its lease ran out "
        "while working on the job"
    )


def _suspended(session: Session, installation_id: int) -> bool:
    installation = session.get(installations.Installation, installation_id)
    return (
        installation is not None
        and installation.status == installations.InstallationStatus.SUSPENDED
    )


def _validate(session: Session, job: PrJob, now: datetime) -> str | None:
    """Why the job cannot be accepted; None once it is validated with its credits reserved."""
    installation = session.get(installations.Installation, job.installation_id)
    if installation is not None and installation.account_id != job.account_id:
        return (
            f"installation {job.installation_id} belongs to account "
            f"{installation.account_id}, not to account {job.account_id}"
        )
    if job.required_credits > 0:
        hold_key = f"pr_job:{job.id}:{_validations(job) + 1}"
        try:
            holds.hold(
                session, job.account_id, job.required_credits, key=hold_key, now=now, job_id=job.id
            )
        except ledger.InsufficientCredits:
            short = balances.available(session, job.account_id)
            return (
                f"account {job.account_id} cannot pay {job.required_credits} credits "
                f"({short} available)"
            )
        job.hold_key = hold_key
    job.status = JobStatus.VALIDATED.value
    job.validated_at = now
    return None


def _validations(job: PrJob) -> int:
    """How many reservations this job made before (a retried job reserves anew)."""
    if job.hold_key is None:
        return 0
    return int(job.hold_key.rsplit(":", 1)[1])


def _snapshot(
    job: PrJob, owner: str, blocked: str | None = None, may_wait: bool = False
) -> ClaimedJob:
    return ClaimedJob(
        id=job.id,
        lease_owner=owner,
        attempts=job.attempts,
        blocked=blocked,
        may_wait=may_wait,
        plan=PullRequestPlan(
            installation_id=job.installation_id,
            repository=job.repository,
            base_branch=job.base_branch,
            head_branch=job.head_branch,
            title=job.title,
            body=job.body,
            files=job.change_set(),
        ),
    )


def _owned(session: Session, claimed: ClaimedJob) -> PrJob | None:
    """The job, locked, while it is still running under this claim's lease; else None."""
    job = session.execute(
        select(PrJob)
        .where(
            PrJob.id == claimed.id,
            PrJob.status == JobStatus.RUNNING.value,
            PrJob.lease_owner == claimed.lease_owner,
        )
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    return job


def succeed(
    session: Session,
    claimed: ClaimedJob,
    opened: OpenedPullRequest,
    *,
    now: datetime,
    meter_event_name: str,
) -> bool:
    """The pull request is open: mark the job done, take its credits once, record its usage.

    False (and nothing written) when the lease is no longer ours: the caller rolls back and
    the job's new owner finishes it, finding the same pull request.
    """
    job = _owned(session, claimed)
    if job is None:
        return False
    job.status = JobStatus.SUCCESS.value
    job.pr_number = opened.number
    job.pr_url = opened.url[:512]
    job.finished_at = now
    job.last_error = None
    _release_lease(job)
    if job.required_credits > 0 and job.hold_key is not None:
        lock_account(session, job.account_id)
        holds.capture_hold(
            session,
            job.hold_key,
            ledger_key=charge_key(job.id),
            reason="pr_job",
            now=now,
            job_id=job.id,
        )
        record_usage(
            session,
            key=charge_key(job.id),
            account_id=job.account_id,
            job_id=job.id,
            quantity=job.required_credits,
            meter_event_name=meter_event_name,
            now=now,
            event_id=job.event_id,
        )
    session.flush()
    return True


def fail(session: Session, claimed: ClaimedJob, reason: str, *, now: datetime) -> bool:
    """GitHub refused for good: the job fails and its reservation is released."""
    job = _owned(session, claimed)
    if job is None:
        return False
    _to_failed(session, job, reason, now)
    return True


def retry_later(
    session: Session,
    claimed: ClaimedJob,
    reason: str,
    *,
    now: datetime,
    policy: RetryPolicy,
    not_before: timedelta | None = None,
) -> JobStatus | None:
    """A technical failure: back to `validated` (reservation kept) after a backoff, or failed
    when the attempts are used up. None when the lease is no longer ours."""
    job = _owned(session, claimed)
    if job is None:
        return None
    if policy.exhausted(job.attempts):
        _to_failed(session, job, f"gave up after {job.attempts} attempts: {reason}", now)
        return JobStatus.FAILED
    delay = policy.delay(job.attempts)
    if not_before is not None:
        delay = max(delay, not_before)
    job.status = JobStatus.VALIDATED.value
    job.next_attempt_at = now + delay
    job.last_error = reason[:4000]
    _release_lease(job)
    session.flush()
    return JobStatus.VALIDATED


def _to_failed(session: Session, job: PrJob, reason: str, now: datetime) -> None:
    if job.hold_key is not None:
        holds.release_hold(session, job.hold_key, now=now)
    job.status = JobStatus.FAILED.value
    job.last_error = reason[:4000]
    job.finished_at = now
    job.next_attempt_at = None
    _release_lease(job)
    session.flush()


def _release_lease(job: PrJob) -> None:
    job.lease_owner = None
    job.lease_expires_at = None
