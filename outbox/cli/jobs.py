"""`outbox jobs`: list, show, retry and submit pull-request jobs.

A thin layer over domain/jobs.py: the commands never write SQL. Submitted jobs are picked
up by the workers through the sweeper (within SWEEP_INTERVAL_SECONDS).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from outbox.cli.common import (
    account_ref,
    fail,
    friendly_errors,
    get_settings,
    id_argument,
    print_json_lines,
    say,
    usage_error,
)
from outbox.cli.tables import key_column, note_column, print_listing, text_column

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

jobs_app = typer.Typer(help="Pull-request jobs: list, show, retry, submit.", no_args_is_help=True)


class StatusChoice(StrEnum):
    pending = "pending"
    validated = "validated"
    running = "running"
    success = "success"
    failed = "failed"


def register(app: typer.Typer) -> None:
    app.add_typer(jobs_app, name="jobs")


@contextmanager
def command_session() -> Iterator[Session]:
    """One transaction on DATABASE_URL for one command: committed when the command succeeds."""
    from outbox.db import make_engine, make_sessionmaker, transaction

    settings = get_settings()
    engine = make_engine(
        settings.database_url, pool_size=1, timeout=settings.database_timeout_seconds
    )
    try:
        with transaction(make_sessionmaker(engine)) as session:
            yield session
    finally:
        engine.dispose()


def account_id_of(session: Session, ref: str | None) -> int | None:
    """The account named by id or login; a CLI error when there is none."""
    if ref is None:
        return None
    from domain.accounts import find_account

    account = find_account(session, account_ref(ref))
    if account is None:
        fail(f"no account with id or login {ref!r}")
    return account.id


@jobs_app.command("list")
@friendly_errors
def list_jobs(
    status: StatusChoice | None = typer.Option(None, help="Only jobs in this status."),
    account: str | None = typer.Option(None, help="Only this account's jobs (id or login)."),
    limit: int = typer.Option(50, min=1, max=10_000, help="At most this many, newest first."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
) -> None:
    """List jobs, newest first (exit 1 when none match)."""
    from domain import jobs

    with command_session() as session:
        account_id = account_id_of(session, account)
        wanted = jobs.JobStatus(status.value) if status else None
        rows = [
            jobs.describe(j)
            for j in jobs.list_jobs(session, status=wanted, account_id=account_id, limit=limit)
        ]
    if not rows:
        fail("no jobs match")
    if as_json:
        print_json_lines(rows)
        return
    columns = (
        key_column("id", right=True),
        key_column("status"),
        key_column("account", right=True),
        text_column("repository", least=12),
        key_column("credits", right=True),
        key_column("tries", right=True),
        key_column("PR"),
        note_column("note"),
    )
    print_listing(
        columns,
        [
            (
                str(row["id"]),
                row["status"],
                str(row["account_id"]),
                row["repository"],
                row["required_credits"],
                str(row["attempts"]),
                f"#{row['pr_number']}" if row["pr_number"] else "",
                _first_line(row["last_error"]),
            )
            for row in rows
        ],
    )


@jobs_app.command("show")
@friendly_errors
def show_job(
    job_id: str = typer.Argument(..., metavar="JOB_ID", help="The job's id."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object."),
) -> None:
    """Show everything about one job."""
    from domain import jobs

    with command_session() as session:
        job = jobs.get_job(session, id_argument(job_id, "job id"))
        if job is None:
            fail(f"no job {job_id}")
        row = jobs.describe(job)
    if as_json:
        print_json_lines([row])
        return
    for name, value in row.items():
        say(f"{name:>16}: {_shown(value)}")


@jobs_app.command("retry")
@friendly_errors
def retry_job(job_id: str = typer.Argument(..., metavar="JOB_ID", help="The job's id.")) -> None:
    """Put a failed job back (it is validated again), or make a waiting job due now."""
    from domain import jobs
    from outbox.db import utcnow

    with command_session() as session:
        try:
            job = jobs.retry_now(session, id_argument(job_id, "job id"), now=utcnow())
        except LookupError:
            fail(f"no job {job_id}")
        except jobs.RetryRefused as refused:
            fail(str(refused))
        say(f"job {job.id} is {job.status}, due now")


@jobs_app.command("submit")
@friendly_errors
def submit_job(
    file: Path = typer.Argument(..., help="The job spec, a JSON file."),
    as_json: bool = typer.Option(False, "--json", help="Print the job as one JSON object."),
) -> None:
    """Submit a job from a JSON spec.

    Fields: account (id or login), installation, repository ("owner/name"), base_branch
    (default: the repository's default branch), title, body, files ([{"path", "content"}
    or {"path", "delete": true}]), required_credits, and an optional key (submitting the
    same key again returns the same job).
    """
    from domain import job_specs, jobs
    from outbox.db import utcnow

    try:
        text = file.read_bytes()
    except OSError as exc:
        usage_error(f"cannot read {file}: {exc.strerror or exc}")
    try:
        spec = job_specs.load_spec(text)
    except job_specs.InvalidJobSpec as invalid:
        usage_error(f"{file}: {invalid}")
    with command_session() as session:
        try:
            job, created = jobs.submit(
                session, spec, now=utcnow(), branch_prefix=get_settings().github_branch_prefix
            )
        except jobs.JobRejected as rejected:
            fail(str(rejected))
        row = jobs.describe(job)
    if as_json:
        print_json_lines([row])
    elif created:
        say(f"job {row['id']} submitted ({row['status']}), branch {row['head_branch']}")
    else:
        say(f"job {row['id']} was already submitted with key {spec.key!r}: {row['status']}")


def _first_line(text: Any) -> str:
    return str(text).splitlines()[0] if text else ""


def _shown(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "-"
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)
