"""Pull-request jobs: the product's paid work, charged only when the pull request is open.

A job moves pending -> validated -> running -> success | failed:
- validation (at its first claim) checks the repository belongs to the installation, the
  installation to the job's account, and reserves the job's credits (a ledger hold), so two
  jobs can never both pass on one credit's worth;
- running: the worker holding the job's lease opens the pull request (domain/pull_requests.py);
- success takes the reserved credits once (ledger key `pr_job:<id>`) and writes one usage
  record, in the transaction that marks the job done; failed releases the reservation;
- a technical failure (GitHub down, rate limit) puts the job back to `validated`, its
  reservation kept, due again per the retry policy: retries are free;
- a job an earlier attempt started may have its pull request already (GitHub opened it, then
  the worker died or its lease ran out): when it may not go on (its installation is no longer
  usable, or its attempts are spent), its claim says why (`ClaimedJob.blocked`) and the
  worker only looks for that pull request: found, the job succeeds and is charged once;
  not found, it fails and its reservation is released.

This module holds the job's table, its submission and the operators' reads and retry;
what a job asks for is read by domain/job_specs.py, and the claims and transitions of a
worker's attempt are domain/job_queue.py. Callers pass the session and the time; nothing
here commits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Index,
    Integer,
    String,
    Text,
    select,
    text,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from domain.accounts import find_account
from domain.credits import Credits
from domain.job_specs import JobSpec
from domain.pull_requests import FileChange
from outbox.session import Base, BigId, UTCDateTime


class JobStatus(StrEnum):
    PENDING = "pending"
    VALIDATED = "validated"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"


#: Statuses of jobs that are not finished.
OPEN = (JobStatus.PENDING, JobStatus.VALIDATED, JobStatus.RUNNING)


class JobOrigin(StrEnum):
    SUBMITTED = "submitted"  #: `outbox jobs submit` or `submit_job()`
    ONBOARDING = "onboarding"  #: the App was installed on a repository


class PrJob(Base):
    __tablename__ = "pr_jobs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    #: The submitter's idempotency key: submitting the same key again returns the same job.
    key: Mapped[str | None] = mapped_column(String(255), unique=True)
    origin: Mapped[str] = mapped_column(String(16))
    account_id: Mapped[int] = mapped_column(BigInteger, index=True)
    installation_id: Mapped[int] = mapped_column(BigInteger, index=True)
    repository: Mapped[str] = mapped_column(String(255))
    base_branch: Mapped[str] = mapped_column(String(255))
    #: Derived from the job when it is submitted; the pull request is looked up by it.
    head_branch: Mapped[str] = mapped_column(String(255), default="")
    title: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    #: The change set: [{"path": …, "content": …}] or [{"path": …, "delete": true}].
    files: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    required_credits: Mapped[Decimal] = mapped_column(Credits())
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The credit reservation of the current validation (a new one after `jobs retry`).
    hold_key: Mapped[str | None] = mapped_column(String(255))
    last_error: Mapped[str | None] = mapped_column(Text)
    pr_number: Mapped[int | None] = mapped_column(Integer)
    pr_url: Mapped[str | None] = mapped_column(String(512))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    validated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The webhook event that made this job (onboarding), if any.
    event_id: Mapped[int | None] = mapped_column(BigInteger, index=True)

    __table_args__ = (
        Index(
            "ix_pr_jobs_due",
            "next_attempt_at",
            postgresql_where=text("status IN ('pending', 'validated')"),
            sqlite_where=text("status IN ('pending', 'validated')"),
        ),
        Index(
            "ix_pr_jobs_lease",
            "lease_expires_at",
            postgresql_where=text("status = 'running'"),
            sqlite_where=text("status = 'running'"),
        ),
    )

    def change_set(self) -> tuple[FileChange, ...]:
        return tuple(
            FileChange(f["path"], None if f.get("delete") else f["content"]) for f in self.files
        )


def charge_key(job_id: int) -> str:
    """The ledger key of a job's one debit."""
    return f"pr_job:{job_id}"


# --- submitting ------------------------------------------------------------------------------


class JobRejected(Exception):
    """A well-formed spec that cannot be accepted (unknown account, key reused)."""


def submit_job(session: Session, spec: JobSpec, *, now: datetime) -> PrJob:
    """Record a new job, pending (or the existing job of the same `key`)."""
    job, _ = submit(session, spec, now=now)
    return job


def submit(
    session: Session,
    spec: JobSpec,
    *,
    now: datetime,
    origin: JobOrigin = JobOrigin.SUBMITTED,
    event_id: int | None = None,
    head_branch: str | None = None,
    branch_prefix: str = "outbox",
) -> tuple[PrJob, bool]:
    """Record a job; True when it is new, False when its `key` was already submitted."""
    account = find_account(session, spec.account)
    if account is None:
        raise JobRejected(f"unknown account: {spec.account}")
    if spec.key is not None:
        existing = find_by_key(session, spec.key)
        if existing is not None:
            return _same_job(existing, spec), False
    job = PrJob(
        key=spec.key,
        origin=origin.value,
        account_id=account.id,
        installation_id=spec.installation,
        repository=spec.repository,
        base_branch=spec.base_branch,
        title=spec.title,
        body=spec.body,
        files=[_file_json(f) for f in spec.files],
        required_credits=spec.required_credits,
        status=JobStatus.PENDING.value,
        attempts=0,
        next_attempt_at=now,
        created_at=now,
        event_id=event_id,
    )
    try:
        with session.begin_nested():
            session.add(job)
            session.flush()
    except IntegrityError:
        # The same key submitted at the same moment by someone else: theirs is the job.
        existing = find_by_key(session, spec.key) if spec.key else None
        if existing is None:
            raise
        return _same_job(existing, spec), False
    job.head_branch = head_branch or _head_branch(job, branch_prefix)
    session.flush()
    return job, True


def _same_job(existing: PrJob, spec: JobSpec) -> PrJob:
    if (existing.repository.lower(), existing.files) != (
        spec.repository.lower(),
        [_file_json(f) for f in spec.files],
    ):
        raise JobRejected(f"key {spec.key!r} was already used by job {existing.id} for other work")
    return existing


def _file_json(change: FileChange) -> dict[str, Any]:
    if change.content is None:
        return {"path": change.path, "delete": True}
    return {"path": change.path, "content": change.content}


def _head_branch(job: PrJob, prefix: str) -> str:
    # The id makes it unique here; the digest keeps it from matching a branch that another
    # deployment (or this one before its database was rebuilt) made for its own job N.
    seed = f"{job.id}\0{job.key}\0{job.repository}\0{job.created_at.isoformat()}\0{job.title}"
    return f"{prefix}/job-{job.id}-{hashlib.sha256(seed.encode()).hexdigest()[:8]}"


def find_by_key(session: Session, key: str) -> PrJob | None:
    return session.scalar(select(PrJob).where(PrJob.key == key))


# --- operators -------------------------------------------------------------------------------


class RetryRefused(Exception):
    """`jobs retry` on a job that must not be put back (it succeeded, or is running)."""


def retry_now(session: Session, job_id: int, *, now: datetime) -> PrJob:
    """Put a failed job back to pending (validated again, with a new reservation), or make a
    waiting job due now. A job that succeeded is never run again."""
    job = session.execute(
        select(PrJob).where(PrJob.id == job_id).with_for_update()
    ).scalar_one_or_none()
    if job is None:
        raise LookupError(f"no job {job_id}")
    if job.status == JobStatus.SUCCESS:
        raise RetryRefused(f"job {job_id} already succeeded (pull request #{job.pr_number})")
    if job.status == JobStatus.RUNNING and (job.lease_expires_at or now) > now:
        raise RetryRefused(f"job {job_id} is running now")
    if job.status == JobStatus.FAILED:
        job.status = JobStatus.PENDING.value
        job.attempts = 0
        job.finished_at = None
    job.next_attempt_at = now
    session.flush()
    return job


def get_job(session: Session, job_id: int) -> PrJob | None:
    return session.get(PrJob, job_id)


def list_jobs(
    session: Session,
    *,
    status: JobStatus | None = None,
    account_id: int | None = None,
    limit: int = 50,
) -> Sequence[PrJob]:
    """Jobs, newest first."""
    query = select(PrJob).order_by(PrJob.id.desc()).limit(limit)
    if status is not None:
        query = query.where(PrJob.status == status.value)
    if account_id is not None:
        query = query.where(PrJob.account_id == account_id)
    return session.scalars(query).all()


def describe(job: PrJob) -> dict[str, Any]:
    """A job as plain values, for the CLI and `--json`."""
    return {
        "id": job.id,
        "status": job.status,
        "origin": job.origin,
        "key": job.key,
        "account_id": job.account_id,
        "installation_id": job.installation_id,
        "repository": job.repository,
        "base_branch": job.base_branch or None,
        "head_branch": job.head_branch,
        "title": job.title,
        "files": [f["path"] + (" (delete)" if f.get("delete") else "") for f in job.files],
        "required_credits": str(job.required_credits),
        "attempts": job.attempts,
        "next_attempt_at": job.next_attempt_at,
        "last_error": job.last_error,
        "pr_number": job.pr_number,
        "pr_url": job.pr_url,
        "hold_key": job.hold_key,
        "charge_key": charge_key(job.id) if job.status == JobStatus.SUCCESS else None,
        "created_at": job.created_at,
        "validated_at": job.validated_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "event_id": job.event_id,
    }


def effects_of_event(session: Session, event_id: int) -> list[dict[str, object]]:
    """The PR jobs a webhook event made (for `outbox events show`)."""
    rows = session.scalars(select(PrJob).where(PrJob.event_id == event_id).order_by(PrJob.id))
    return [
        {
            "table": "pr_jobs",
            "id": job.id,
            "status": job.status,
            "repository": job.repository,
            "origin": job.origin,
            "pr_number": job.pr_number,
        }
        for job in rows
    ]
