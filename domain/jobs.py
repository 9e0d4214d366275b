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

Every transition is one guarded UPDATE on the row (status and lease owner), so two workers
never both move a job. Callers pass the session and the time; nothing here commits.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
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
    and_,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from domain import installations, ledger
from domain.accounts import find_account
from domain.credits import Credits
from domain.pull_requests import FileChange, OpenedPullRequest, PullRequestPlan
from domain.usage import record_usage
from outbox.db import Base, UTCDateTime
from outbox.models import BigId
from outbox.retry import RetryPolicy

MAX_FILES = 300  #: files in one change set; GitHub's tree API takes more, reviewers do not
MAX_TITLE = 256  #: characters; GitHub's limit for a pull request title
MAX_PATH = 1024  #: characters of one file path


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


class InvalidJobSpec(ValueError):
    """A job spec that cannot be a job; the message names the field."""


class JobRejected(Exception):
    """A well-formed spec that cannot be accepted (unknown account, key reused)."""


@dataclass(frozen=True)
class JobSpec:
    """What a job asks for, as `outbox jobs submit FILE` reads it from JSON."""

    account: str  #: the account's numeric id or login
    installation: int
    repository: str
    base_branch: str
    title: str
    body: str
    files: tuple[FileChange, ...]
    required_credits: Decimal
    key: str | None = None


def load_spec(text: str | bytes) -> JobSpec:
    """A JobSpec from JSON text; numbers with a fraction are read exactly (never floats)."""
    try:
        document = json.loads(text, parse_float=Decimal)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidJobSpec(f"not valid JSON: {exc}") from exc
    return parse_spec(document)


def parse_spec(document: Any) -> JobSpec:
    """A JobSpec from parsed JSON; InvalidJobSpec names the first field that is wrong."""
    if not isinstance(document, dict):
        raise InvalidJobSpec("a job spec is a JSON object")
    known = {f for f in JobSpec.__dataclass_fields__}
    unknown = sorted(set(document) - known)
    if unknown:
        raise InvalidJobSpec(f"unknown field(s): {', '.join(unknown)}")
    account = document.get("account")
    if isinstance(account, bool) or not isinstance(account, int | str) or not str(account):
        raise InvalidJobSpec("account: the account's numeric id or login is required")
    installation = document.get("installation")
    if isinstance(installation, bool) or not isinstance(installation, int) or installation <= 0:
        raise InvalidJobSpec("installation: a positive installation id is required")
    repository = _text(document, "repository")
    owner, _, name = repository.partition("/")
    if not owner or not name or "/" in name or " " in repository:
        raise InvalidJobSpec("repository: expected 'owner/name'")
    title = _text(document, "title")
    if len(title) > MAX_TITLE:
        raise InvalidJobSpec(f"title: at most {MAX_TITLE} characters")
    body = document.get("body", "")
    if not isinstance(body, str):
        raise InvalidJobSpec("body: must be a string")
    key = document.get("key")
    if key is not None and (not isinstance(key, str) or not key or len(key) > 200):
        raise InvalidJobSpec("key: a non-empty string of at most 200 characters")
    raw_credits = document.get("required_credits")
    if raw_credits is None:
        raise InvalidJobSpec("required_credits: required (0 for free work)")
    try:
        credits = ledger.parse_credits(raw_credits)
    except (ledger.InvalidAmount, TypeError, ValueError) as exc:
        raise InvalidJobSpec(f"required_credits: {exc}") from exc
    if credits < 0:
        raise InvalidJobSpec("required_credits: must not be negative")
    return JobSpec(
        account=str(account),
        installation=installation,
        repository=repository,
        base_branch=_branch(document),
        title=title,
        body=body,
        files=_files(document.get("files")),
        required_credits=credits,
        key=key,
    )


def _text(document: dict[str, Any], field: str) -> str:
    value = document.get(field)
    if not isinstance(value, str) or not value.strip():
        raise InvalidJobSpec(f"{field}: a non-empty string is required")
    return value.strip()


def _branch(document: dict[str, Any]) -> str:
    if document.get("base_branch") is None:
        return ""  # the repository's default branch, read when the job runs
    branch = _text(document, "base_branch")
    if branch.startswith(("/", "refs/")) or ".." in branch or " " in branch:
        raise InvalidJobSpec("base_branch: a branch name such as 'main'")
    return branch


def _files(value: Any) -> tuple[FileChange, ...]:
    if not isinstance(value, list) or not value:
        raise InvalidJobSpec("files: a non-empty list of {path, content} or {path, delete: true}")
    if len(value) > MAX_FILES:
        raise InvalidJobSpec(f"files: at most {MAX_FILES} files in one job")
    changes: list[FileChange] = []
    seen: set[str] = set()
    for n, item in enumerate(value):
        where = f"files[{n}]"
        if not isinstance(item, dict) or set(item) - {"path", "content", "delete"}:
            raise InvalidJobSpec(f"{where}: expected {{path, content}} or {{path, delete: true}}")
        path = item.get("path")
        if not isinstance(path, str) or not _safe_path(path):
            raise InvalidJobSpec(f"{where}.path: a relative path without '.', '..' or '//'")
        if path in seen:
            raise InvalidJobSpec(f"{where}.path: {path} appears twice")
        seen.add(path)
        deleting = item.get("delete", False)
        if deleting is True and "content" not in item:
            changes.append(FileChange(path, None))
        elif "content" in item and isinstance(item["content"], str) and not deleting:
            changes.append(FileChange(path, item["content"]))
        else:
            raise InvalidJobSpec(f"{where}: give either content (a string) or delete: true")
    return tuple(changes)


def _safe_path(path: str) -> bool:
    if not path or len(path) > MAX_PATH or path.startswith("/") or "\x00" in path:
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))


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


# --- working on a job ------------------------------------------------------------------------


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
            ledger.hold(
                session, job.account_id, job.required_credits, key=hold_key, now=now, job_id=job.id
            )
        except ledger.InsufficientCredits:
            short = ledger.available(session, job.account_id)
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
        ledger.lock_account(session, job.account_id)
        ledger.capture_hold(
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
        ledger.release_hold(session, job.hold_key, now=now)
    job.status = JobStatus.FAILED.value
    job.last_error = reason[:4000]
    job.finished_at = now
    job.next_attempt_at = None
    _release_lease(job)
    session.flush()


def _release_lease(job: PrJob) -> None:
    job.lease_owner = None
    job.lease_expires_at = None


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
