"""What a batch sends: statements and commits per batch and per row, by statement, for one
workload of bench/mix.py drained in this process by `process_pass` in one thread.

    .venv/bin/python -m bench.batch_statements mix [--events 3000] [--shared]

Workloads: `bench` (bench-shaped checkouts), `realistic` (realistic checkouts), `mix` (the
mix, its refundable purchases drained first). The rows are sent through a real `outbox
serve`, then drained pass after pass, each pass claiming up to EVENTS_PER_PASS rows, until
a pass finds none. Every statement psycopg sends (SQLAlchemy's and the batch's own on the
session's connection) and every commit is counted while draining; the time is the
client's wait for each, on whatever else runs on the machine. One thread meets no busy
account nor an object in another batch's hands: what concurrency costs is in bench.mix's
pg_stat_statements figures.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from typing import Any

import psycopg
from sqlalchemy import create_engine, func, select

from bench import mix, mix_workload
from bench.common import add_server_arguments, postgres, postgres_database
from bench.workload import ACCOUNTS, STRIPE_SECRET, WELCOME_CREDITS, seed
from outbox.models import Status, WebhookEvent
from outbox.settings import Settings
from processors import runtime as runtimes
from processors.apply import process_pass

KEY_WORDS = 4  #: a statement is named by its first words


class Counted:
    """Statements and commits psycopg sends while `on`, by their first words."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.seconds: Counter[str] = Counter()
        self.on = False
        execute, commit = psycopg.Cursor.execute, psycopg.Connection.commit
        counted = self

        def counting_execute(cursor: Any, query: Any, params: Any = None, **kw: Any) -> Any:
            if not counted.on:
                return execute(cursor, query, params, **kw)
            key = " ".join(str(query).split()[:KEY_WORDS])[:70]
            started = time.perf_counter()
            try:
                return execute(cursor, query, params, **kw)
            finally:
                counted.calls[key] += 1
                counted.seconds[key] += time.perf_counter() - started

        def counting_commit(connection: Any) -> Any:
            if counted.on:
                counted.calls["COMMIT"] += 1
            return commit(connection)

        psycopg.Cursor.execute = counting_execute  # type: ignore[method-assign]
        psycopg.Connection.commit = counting_commit  # type: ignore[method-assign]


def drain(runtime: runtimes.Runtime) -> int:
    """Passes until one finds nothing; the passes that applied something."""
    passes = 0
    while process_pass(runtime, []):
        passes += 1
    return passes


def requests(
    url: str, runtime: runtimes.Runtime, kind: str, events: int
) -> list[mix_workload.Request]:
    workload = mix_workload.Workload("stmt", mix_workload.Expected())
    if kind == "bench":
        return workload.bench_checkouts(events)
    if kind == "realistic":
        return workload.checkouts(events)
    refunds = mix_workload.refunds_for(events)
    deliver(url, workload.refundable_purchases(refunds))
    drain(runtime)
    return workload.mix(events)


def deliver(url: str, sent: list[mix_workload.Request]) -> None:
    with mix.ingress(url) as port:
        mix.send(port, sent)


def measure(url: str, kind: str, events: int) -> None:
    engine = create_engine(url)
    counted = Counted()
    settings = Settings(
        database_url=url, github_webhook_secret=mix_workload.GITHUB_SECRET,
        stripe_webhook_secret=STRIPE_SECRET, stripe_mode="any", welcome_credits=WELCOME_CREDITS,
    )  # fmt: skip
    runtime = runtimes.configure(settings)
    try:
        seed(engine)
        deliver(url, mix_workload.installations())
        drain(runtime)
        deliver(url, requests(url, runtime, kind, events))
        with engine.connect() as conn:
            pending = conn.scalar(
                select(func.count()).where(WebhookEvent.status == Status.PENDING.value)
            )
        counted.on = True
        started = time.perf_counter()
        passes = drain(runtime)
        seconds = time.perf_counter() - started
        counted.on = False
    finally:
        runtime.close()
        engine.dispose()
    rows, commits = int(pending or 0), counted.calls["COMMIT"]
    sent = sum(counted.calls.values())
    print(f"{kind}: {rows:,} rows in {passes} passes, {commits} commits, {sent:,} statements "
          f"and commits: {sent / max(1, passes):.1f} a pass, {sent / max(1, rows):.2f} a row; "
          f"{seconds:.1f} s, one thread, {ACCOUNTS} accounts")  # fmt: skip
    for key, calls in counted.calls.most_common():
        print(
            f"  {calls / max(1, passes):5.2f} a pass  {counted.seconds[key] * 1000:7.0f} ms  {key}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=["bench", "realistic", "mix"])
    parser.add_argument("--events", type=int, default=3000, help="webhooks of the workload")
    add_server_arguments(parser)
    args = parser.parse_args()
    with (
        postgres(args.shared, args.port) as admin,
        postgres_database("outbox_bench_stmt", admin) as url,
    ):
        measure(url, args.kind, args.events)


if __name__ == "__main__":
    main()
