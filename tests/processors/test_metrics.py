"""The processors' metrics: type families, the backlog gauges read through partial
indexes, and `outbox worker` / `outbox sweep` serving them on METRICS_PORT, the worker's
processes counted once."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from domain.jobs import JobStatus, PrJob
from domain.usage import record_usage
from outbox import claiming, finishing
from outbox.db import make_engine, make_sessionmaker, transaction, utcnow
from outbox.retry import RetryPolicy
from processors.backlog import BacklogCollector, read_backlog
from processors.metrics import type_family
from tests.factories import incoming, record
from tests.outbox.storage_support import partition_index_parents
from tests.processors.handlers import HANDLER_TABLE, scripted_event
from tests.services import WORKER_READY, OutboxProcess, free_port, outbox_env, wait_until

LEASE = timedelta(minutes=5)


@pytest.mark.parametrize(
    ("event_type", "family"),
    [
        ("pull_request.opened", "pull_request"),
        ("customer.subscription.updated", "customer.subscription"),
        ("invoice.paid", "invoice"),
        ("push", "push"),
        ("Not A Type", "other"),
        ("x" * 101, "other"),
    ],
)
def test_an_event_type_is_labelled_by_its_family(event_type, family):
    assert type_family(event_type) == family


def _job(status: JobStatus, now) -> PrJob:
    return PrJob(
        origin="submitted",
        account_id=1,
        installation_id=2,
        repository="o/r",
        base_branch="main",
        title="t",
        body="b",
        files=[],
        required_credits=Decimal("1"),
        status=status.value,
        created_at=now,
        next_attempt_at=now,
    )


def fill_backlog(engine, sessions, now):
    """Two due rows (oldest due 10 min ago), one waiting for its retry, one dead, one whose
    lease ran out, one done; jobs of each status; one unreported and one reported usage."""
    old = now - timedelta(minutes=10)
    due_old, _due_new, retrying, dead, stuck, done = (
        r.id for r in record(engine, *(incoming() for _ in range(6)), now=old)
    )
    with transaction(sessions) as session:
        session.execute(
            text("UPDATE webhook_events SET next_attempt_at = :at WHERE id = :id"),
            {"at": now - timedelta(seconds=5), "id": _due_new},
        )
        claiming.claim(session, now=old, lease=LEASE, ids=[stuck])  # its lease ran out 5 min ago
        claimed = {
            c.id: c
            for c in claiming.claim(session, now=now, lease=LEASE, ids=[retrying, dead, done])
        }
        later = RetryPolicy(base_seconds=3600, jitter=0)
        finishing.fail(session, claimed[retrying], "later", policy=later, now=now)
        once = RetryPolicy(max_attempts=1, jitter=0)
        finishing.fail(session, claimed[dead], "boom", policy=once, now=now)
        assert finishing.mark_done(session, claimed[done], now)
        for status in (
            JobStatus.PENDING,
            JobStatus.PENDING,
            JobStatus.VALIDATED,
            JobStatus.RUNNING,
            JobStatus.SUCCESS,
        ):
            session.add(_job(status, now))
        record_usage(
            session,
            key="a",
            account_id=1,
            job_id=None,
            quantity=Decimal(1),
            meter_event_name="m",
            now=now - timedelta(hours=3),
        )
        reported = record_usage(
            session,
            key="b",
            account_id=1,
            job_id=None,
            quantity=Decimal(1),
            meter_event_name="m",
            now=now - timedelta(hours=9),
        )
        reported.reported_at = now
    return due_old


def test_the_backlog_counts_what_waits_and_how_long(engine, sessions):
    now = utcnow()
    fill_backlog(engine, sessions, now)
    with sessions() as session:
        backlog = read_backlog(session, now)
    assert backlog.due == 2
    assert backlog.oldest_due_seconds == pytest.approx(600, abs=1)
    assert backlog.dead == 1
    assert backlog.expired_leases == 1
    assert backlog.jobs == {"pending": 2, "validated": 1, "running": 1}
    assert backlog.unreported_usage == 1
    assert backlog.oldest_unreported_usage_seconds == pytest.approx(3 * 3600, abs=1)


def test_an_empty_backlog_is_zero_everywhere(engine, sessions):
    with sessions() as session:
        backlog = read_backlog(session, utcnow())
    assert (backlog.due, backlog.oldest_due_seconds, backlog.dead, backlog.expired_leases) == (
        0,
        0,
        0,
        0,
    )
    assert backlog.unreported_usage == 0 and backlog.oldest_unreported_usage_seconds == 0


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_every_part_of_the_backlog_read_walks_an_index(engine, sessions):
    sent = []
    from sqlalchemy import event

    def capture(conn, cursor, statement, params, context, executemany):
        sent.append((statement, params))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        with sessions() as session:
            read_backlog(session, utcnow())
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    [(statement, params)] = sent
    with engine.connect() as conn:
        cursor = conn.connection.driver_connection.cursor()
        cursor.execute("SET enable_seqscan = off")  # a scan the planner cannot avoid shows
        cursor.execute("EXPLAIN " + statement, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
        parents = partition_index_parents(conn)
    assert "Seq Scan" not in plan, plan
    # every index read is a partial one, of the rows still in play: never a whole table's
    in_play = {
        "ix_webhook_events_due",
        "ix_webhook_events_in_line",
        "ix_webhook_events_lease",
        "ix_webhook_events_dead",
        "ix_pr_jobs_due",
        "ix_pr_jobs_lease",
        "ix_usage_records_unreported",
    }
    # (on Postgres, webhook_events's are read in each of its partitions)
    used = [parents.get(i, i) for i in re.findall(r"(?:using|Bitmap Index Scan on) (\w+)", plan)]
    assert len(used) >= 9 and set(used) <= in_play, plan


def scrape(text_body: str) -> dict[tuple[str, tuple], float]:
    """(sample name, sorted labels) -> value."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text_body)
        for s in family.samples
    }


def test_the_collector_serves_the_backlog_gauges(engine, sessions):
    fill_backlog(engine, sessions, utcnow())
    registry = CollectorRegistry()
    registry.register(BacklogCollector(sessions))
    samples = scrape(generate_latest(registry).decode())
    assert samples[("outbox_backlog_up", ())] == 1
    assert samples[("outbox_due_events", ())] == 2
    assert samples[("outbox_dead_events", ())] == 1
    assert samples[("outbox_expired_leases", ())] == 1
    assert samples[("outbox_jobs", (("status", "validated"),))] == 1
    assert samples[("outbox_unreported_usage_records", ())] == 1
    assert samples[("outbox_oldest_due_seconds", ())] >= 599


def test_the_collector_says_when_it_cannot_read_the_database():
    dead = make_engine("postgresql+psycopg://postgres@127.0.0.1:1/nowhere")
    registry = CollectorRegistry()
    registry.register(BacklogCollector(make_sessionmaker(dead)))
    samples = scrape(generate_latest(registry).decode())
    assert samples == {("outbox_backlog_up", ()): 0}


# --- the processes ---------------------------------------------------------------------------


def metrics_of(port: int) -> dict[tuple[str, tuple], float]:
    return scrape(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text)


def processed(samples, outcome="done") -> float:
    return sum(
        value
        for (name, labels), value in samples.items()
        if name == "outbox_events_processed_total" and ("outcome", outcome) in labels
    )


def _ring(env, ids):
    from tests.processors.test_processes import ring_from_here

    ring_from_here(env, ids)


@pytest.mark.slow
@pytest.mark.redis
def test_worker_processes_are_counted_once_and_afresh_after_a_restart(
    sqlite_db, redis_url, tmp_path
):
    url, engine = sqlite_db
    port = free_port()
    env = outbox_env(
        url,
        redis_url=redis_url,
        handler_table=HANDLER_TABLE,
        metrics_port=port,
        stripe_mode="any",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
    )

    def run(count: int) -> dict:
        ids = [r.id for r in record(engine, *(scripted_event() for _ in range(count)))]
        with OutboxProcess(["worker", "-p", "2", "-t", "1"], env, log_dir=tmp_path) as worker:
            worker.wait_for_output(WORKER_READY, count=2)
            _ring(env, ids)
            return wait_until(
                lambda: (s := _try_metrics(port)) and processed(s) == count and s,
                timeout=30,
                what=f"{count} events counted",
            )

    first = run(12)
    assert processed(first) == 12  # not 24: the files of two processes, summed once
    assert first[("outbox_batch_size_count", ())] >= 1
    families = {
        dict(labels).get("family")
        for (name, labels) in first
        if name == "outbox_events_processed_total"
    }
    assert families == {"test"}
    second = run(3)
    assert processed(second) == 3  # the last run's files were not counted again


def _try_metrics(port):
    try:
        return metrics_of(port)
    except httpx.HTTPError:
        return None


@pytest.mark.slow
def test_the_sweeper_serves_its_metrics_and_the_backlog(engine, sessions, database_url, tmp_path):
    fill_backlog(engine, sessions, utcnow())
    port = free_port()
    env = outbox_env(
        database_url,
        redis_url="redis://127.0.0.1:1/0",  # Redis down: the pass applies the due rows here
        metrics_port=port,
        sweep_interval_seconds=3600,
    )
    with OutboxProcess(["sweep"], env, port=port, log_dir=tmp_path) as sweeper:
        samples = wait_until(
            lambda: (
                (s := metrics_of(port))
                and ("outbox_sweep_failures_total", (("step", "webhook_events"),)) in s
                and s
            ),
            timeout=20,
            what="the first pass counted",
        )
        assert f"sweeper metrics on http://127.0.0.1:{port}/" in sweeper.output()
    assert samples[("outbox_backlog_up", ())] == 1
    assert samples[("outbox_dead_events", ())] == 1
    assert samples[("outbox_jobs", (("status", "pending"),))] == 2


def test_a_taken_metrics_port_is_refused_in_one_line(sqlite_db):
    import socket

    from tests.processors.test_commands import outbox

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = outbox_env(sqlite_db[0], redis_url="redis://127.0.0.1:1/0", metrics_port=port)
        result = outbox("sweep", env=env)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert f"cannot serve metrics on 127.0.0.1:{port} (METRICS_HOST / METRICS_PORT)" in line
