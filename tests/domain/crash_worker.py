"""A worker process that dies (SIGKILL) right after GitHub opened a job's pull request.

Run as `python -m tests.domain.crash_worker JOB_ID` with the settings in the environment.
Nothing after GitHub's answer runs: no commit, no rollback, no `finally`.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import processors.jobs as job_steps
from domain.clients import github_app, stripe_client
from domain.pull_requests import open_pull_request
from outbox.db import make_engine, make_sessionmaker
from outbox.retry import RetryPolicy
from outbox.settings import get_settings


def open_then_die(*args: Any) -> Any:
    open_pull_request(*args)
    os.kill(os.getpid(), signal.SIGKILL)


def main(job_id: int) -> None:
    settings = get_settings()
    job_steps.open_pull_request = open_then_die  # type: ignore[assignment]
    work = job_steps.JobWork(
        sessions=make_sessionmaker(make_engine(settings.database_url)),
        settings=settings,
        policy=RetryPolicy.from_settings(settings),
        github=lambda: github_app(settings),
        stripe=lambda: stripe_client(settings),
    )
    job_steps.work_on_job(work, job_id)
    sys.exit("the worker should have died")


if __name__ == "__main__":
    main(int(sys.argv[1]))
