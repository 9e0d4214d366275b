"""Processing benchmarks: real `outbox worker` processes on Postgres and a private Redis,
every event a credit-pack purchase that makes a real ledger grant.

    .venv/bin/python -m bench.pipeline [--events 100000]   (backlog drain vs bare SQL loop)

- backlog: N purchases stored, drained by 2 worker processes, rung once each as the ingress
  would; in the same run and on the same table, a bare SQL claim-and-mark loop
  (bench/bare_claims.py,
  2 processes x 8 threads like the workers) drains the same rows first;
- growth: the rate with 1,000,000 finished rows in the table vs an empty one, and the RSS of
  the ingress and the workers over a long stream of webhooks through the ingress;
- latency: a steady rate of webhooks through the ingress; from `received_at` (set before the
  ingress commits and answers) to `processed_at` (set in the transaction of the effect),
  with the doorbell, and with Redis stopped, so that only the sweeper, applying the due
  rows itself, is left.

Every process is on 127.0.0.1; every wait is bounded. bench/run.py runs them all.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from sqlalchemy import Engine, Interval, create_engine, func, literal, select

from bench.checkouts import signed_checkouts
from bench.common import postgres_database, print_table, python, write_results
from bench.loadgen import closed_loop, open_loop
from bench.loadgen import run as run_load
from bench.workload import STRIPE_SECRET, chunks, grants, seed, signed_purchases, store_backlog
from outbox.models import Status, WebhookEvent
from outbox.settings import Settings
from processors.apply import EVENTS_PER_PASS
from tests.services import (
    ROOT,
    WORKER_READY,
    OutboxProcess,
    RedisServer,
    free_port,
    outbox_env,
    wait_until,
)

WORKER_PROCESSES = 2  #: `outbox worker -p 2`, the processes the processing targets assume
BARE_THREADS = 8  #: threads of each bare-loop process: its best rate here, a strict baseline
SWEEP_INTERVAL = 1.0  #: seconds between sweeper passes in the benchmarks
FINISHED_ROWS = 1_000_000  #: done rows put in the table for the growth measurement
SEND_CHUNK = 20_000  #: webhooks signed at once (Stripe signatures age: 300 s tolerance)
POLL = 0.25  #: seconds between two looks at the table while waiting
#: Seconds at the start of a steady run whose rows are sent but not counted: the stack has
#: just started, and its first passes prepare their statements, open their connections and
#: fill their caches (hundreds of milliseconds for the rows of the first two seconds here),
#: where a deployment's workers have run for hours. The figure is the steady state's; the
#: p99 over every row, warm-up included, is reported beside it.
WARMUP_SECONDS = 3.0


@dataclass
class Stack:
    """The running service for one measurement: workers, maybe an ingress and a sweeper."""

    url: str
    engine: Engine
    redis: RedisServer
    env: dict[str, str]
    workers: OutboxProcess
    ingress_port: int | None = None
    ingress: OutboxProcess | None = None
    processes: list[OutboxProcess] = field(default_factory=list)

    def ring(self, ids: list[int]) -> None:
        """Send the doorbell messages for `ids`, as the ingress does after each commit."""
        from processors.broker import setup_broker
        from processors.event_actor import ring_events

        settings = Settings(redis_url=self.redis.url, redis_namespace=self.env["REDIS_NAMESPACE"])
        setup_broker(settings, in_process=False)
        ring_events(ids)


@contextmanager
def stack(
    url: str, *, ingress: bool = False, sweeper: bool = False, **settings: Any
) -> Iterator[Stack]:
    """Workers (and an ingress, a sweeper) on database `url` and a private redis-server;
    `settings` are more of their settings by field name."""
    with ExitStack() as exit_stack:
        redis = exit_stack.enter_context(RedisServer())
        env = outbox_env(
            url,
            redis_url=redis.url,
            **{
                "stripe_webhook_secret": STRIPE_SECRET,
                "stripe_mode": "any",
                "log_level": "INFO",
                "sweep_interval_seconds": SWEEP_INTERVAL,
                "welcome_credits": 0,
                **settings,
            },
        )
        engine = create_engine(url)
        exit_stack.callback(engine.dispose)
        workers = OutboxProcess(["worker", "-p", str(WORKER_PROCESSES)], env)
        exit_stack.enter_context(workers)
        workers.wait_for_output(WORKER_READY, count=WORKER_PROCESSES, timeout=60)
        result = Stack(url, engine, redis, env, workers)
        if sweeper:
            exit_stack.enter_context(OutboxProcess(["sweep"], env))
        if ingress:
            port = free_port()
            result.ingress_port = port
            result.ingress = exit_stack.enter_context(
                OutboxProcess(["serve", "--port", str(port)], env, port=port)
            )
        yield result


def unfinished(engine: Engine) -> int:
    """Pending and processing rows, each counted through its own partial index (a count of
    both at once may read the table: a million rows four times a second beside the drain)."""
    counts = [
        select(func.count()).where(WebhookEvent.status == status.value).scalar_subquery()
        for status in (Status.PENDING, Status.PROCESSING)
    ]
    with engine.connect() as conn:
        return int(conn.scalar(select(counts[0] + counts[1])) or 0)


def wait_drained(engine: Engine, timeout: float) -> None:
    wait_until(lambda: unfinished(engine) == 0, timeout=timeout, interval=POLL,
               what="every event processed")  # fmt: skip


def due_ids(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        query = select(WebhookEvent.id).where(WebhookEvent.status == Status.PENDING.value)
        return list(conn.scalars(query.order_by(WebhookEvent.id)))


def drain_rate(s: Stack, count: int, *, counted: int | None = None) -> float:
    """Ring every pending row once, wait until all are done; events per second: the rows
    rung, or `counted` (a workload's every webhook, those the ingress stored finished
    included) over the same time."""
    ids = due_ids(s.engine)
    started = datetime.now(UTC)
    s.ring(ids)
    wait_drained(s.engine, timeout=max(120.0, count / 100))
    with s.engine.connect() as conn:  # among the rows rung: a table of finished rows is not read
        last = conn.scalar(
            select(func.max(WebhookEvent.processed_at)).where(WebhookEvent.id >= min(ids))
        )
    assert last is not None
    drained = len(ids) if counted is None else counted
    return drained / max(1e-6, (last - started).total_seconds())


def conninfo(url: str) -> str:
    """libpq's form of a SQLAlchemy Postgres URL: the URL without SQLAlchemy's "+psycopg"
    (as outbox/driver/dbapi.py connects), so a password, a missing port or options carry over."""
    return "postgresql://" + url.partition("://")[2]


def bare_rate(url: str, count: int, batch: int | None = None) -> float:
    """Drain the pending rows with the bare claim-and-mark loop; rows per second."""
    argv = [python(), "-m", "bench.bare_claims", conninfo(url), str(BARE_THREADS)]
    if batch is not None:
        argv.append(str(batch))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    procs = [subprocess.Popen(argv, cwd=ROOT, env=env) for _ in range(WORKER_PROCESSES)]
    for proc in procs:
        proc.wait(timeout=max(120.0, count / 200))
    return count / (time.perf_counter() - started)


def reset_to_pending(url: str) -> None:
    """Put the rows the bare loop finished back to pending, and vacuum what that left."""
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        conn.execute(
            "UPDATE webhook_events SET status = 'pending', attempts = 0, "
            "next_attempt_at = received_at, lease_owner = NULL, lease_expires_at = NULL, "
            "processed_at = NULL"
        )
        conn.execute("VACUUM ANALYZE webhook_events")


def measure_backlog(url: str, count: int, rounds: int = 3) -> list[dict[str, Any]]:
    """The bare loop and the workers drain the same `count` stored purchases, one after the
    other, in each of `rounds` rounds (which goes first alternating); the ratio is the
    median of the rounds' ratios, the rates their medians. The bare loop also drains them
    claiming as many rows at once as a worker's pass (EVENTS_PER_PASS), shown beside: the
    target's baseline claims 10."""
    engine = create_engine(url)
    bare_rates: list[float] = []
    real_rates: list[float] = []
    bare_pass_rates: list[float] = []
    exact = True
    try:
        seed(engine)
        for round_ in range(rounds):
            clear_backlog(url)
            store_backlog(engine, uuid.uuid4().hex[:6], count)
            for part in ("bare", "workers") if round_ % 2 == 0 else ("workers", "bare"):
                reset_to_pending(url)  # the same vacuumed start for both
                if part == "bare":
                    bare_rates.append(bare_rate(url, count))
                    reset_to_pending(url)
                    bare_pass_rates.append(bare_rate(url, count, EVENTS_PER_PASS))
                    continue
                with stack(url) as s:
                    real_rates.append(drain_rate(s, count))
                exact &= grants(engine) == (count, 85 * count)
    finally:
        engine.dispose()
    ratios = [real / bare for real, bare in zip(real_rates, bare_rates, strict=True)]
    bare, real, ratio = (statistics.median(v) for v in (bare_rates, real_rates, ratios))
    bare_pass = statistics.median(bare_pass_rates)

    def shown(values: list[float], unit: str = "/s") -> str:
        return ", ".join(f"{v:,.2f}x" if unit == "x" else f"{v:,.0f}/s" for v in values)

    return [
        {"benchmark": "processing", "measure": f"bare SQL claim-and-mark, {count} rows",
         "figure": f"median {bare:,.0f}/s of {shown(bare_rates)}", "target": "(baseline)",
         "pass": ""},
        {"benchmark": "processing", "measure": f"2 workers, {count} credit-pack grants",
         "figure": f"median {real:,.0f}/s of {shown(real_rates)}", "target": ">= 2,000/s",
         "pass": real >= 2000},
        {"benchmark": "processing", "measure": "workers / bare loop, the same round",
         "figure": f"median {ratio:.2f}x of {shown(ratios, 'x')}", "target": ">= 0.75x",
         "pass": ratio >= 0.75},
        {"benchmark": "processing",
         "measure": f"bare loop claiming {EVENTS_PER_PASS} rows at once (a worker's pass)",
         "figure": f"median {bare_pass:,.0f}/s of {shown(bare_pass_rates)}: workers "
                   f"{real / bare_pass:.2f}x", "target": "(shown)", "pass": ""},
        {"benchmark": "processing", "measure": "ledger grants exactly once, every round",
         "figure": f"{count} entries, {85 * count} credits" if exact else "not exact",
         "target": f"{count}, {85 * count}", "pass": exact},
    ]  # fmt: skip


def clear_backlog(url: str) -> None:
    """Remove a round's rows and its grants (the accounts and their welcome grants stay), so
    that every round drains the same number of rows from an empty, vacuumed table."""
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        conn.execute("TRUNCATE webhook_events, credit_purchases CASCADE")
        conn.execute("DELETE FROM credit_ledger WHERE key LIKE 'pack:%'")
        conn.execute("VACUUM ANALYZE credit_ledger")


INSERT_FINISHED = """
INSERT INTO webhook_events (source, delivery_id, event_type, livemode, raw_body, headers,
    received_at, verified_by, backfilled, status, attempts, next_attempt_at, processed_at)
SELECT 'stripe', 'evt_old_' || g, 'checkout.session.completed', false, '\\x7b7d'::bytea, '{}',
       now() - interval '2 days', 'stripe#0', false, 'done', 1, NULL, now() - interval '2 days'
  FROM generate_series(1, %(rows)s) AS g
"""


def measure_growth(url: str, count: int, finished: int = FINISHED_ROWS) -> list[dict[str, Any]]:
    engine = create_engine(url)
    try:
        seed(engine)
        with stack(url) as s:
            store_backlog(engine, "empty" + uuid.uuid4().hex[:6], count)
            empty = drain_rate(s, count)
            with psycopg.connect(conninfo(url), autocommit=True) as conn:
                conn.execute(INSERT_FINISHED, {"rows": finished})
                conn.execute("VACUUM ANALYZE webhook_events")  # what autovacuum does next
            store_backlog(engine, "full" + uuid.uuid4().hex[:6], count)
            full = drain_rate(s, count)
    finally:
        engine.dispose()
    ratio = full / empty
    return [
        {"benchmark": "growth", "measure": f"rate, empty table ({count} events)",
         "figure": f"{empty:,.0f}/s", "target": "(baseline)", "pass": ""},
        {"benchmark": "growth", "measure": f"rate, {finished:,} done rows in the table",
         "figure": f"{full:,.0f}/s", "target": "(measured)", "pass": ""},
        {"benchmark": "growth", "measure": "full / empty table", "figure": f"{ratio:.2f}x",
         "target": ">= 0.8x", "pass": ratio >= 0.8},
    ]  # fmt: skip


def rss_kib(pid: int) -> int:
    """Resident memory of `pid` and all its children (a Dramatiq parent and its workers)."""
    total = 0
    for candidate in [pid, *children(pid)]:
        try:
            with open(f"/proc/{candidate}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except FileNotFoundError:
            continue
    return total


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, IndexError, ValueError):
                continue
            if parent == pid:
                found.append(int(entry))
    return found


def send(port: int, run: str, start: int, count: int, senders: int = 16) -> int:
    """Deliver purchases start..start+count through the ingress; how many got 2xx."""
    ok = 0
    for first, size in chunks(count, SEND_CHUNK):
        requests = signed_purchases(port, run, start + first, size)
        result = run_load(closed_loop("127.0.0.1", port, requests, senders, 600.0))
        ok += result.statuses.get(200, 0)
    return ok


def measure_memory(url: str, total: int) -> list[dict[str, Any]]:
    warm = min(SEND_CHUNK, total // 10)
    run = "mem" + uuid.uuid4().hex[:6]
    engine = create_engine(url)
    try:
        seed(engine)
        with stack(url, ingress=True, sweeper=True) as s:
            assert s.ingress is not None and s.ingress_port is not None
            send(s.ingress_port, run, 0, warm)
            wait_drained(engine, timeout=300)
            before = rss_kib(s.ingress.pid), rss_kib(s.workers.pid)
            ok = send(s.ingress_port, run, warm, total - warm)
            wait_drained(engine, timeout=900)
            after = rss_kib(s.ingress.pid), rss_kib(s.workers.pid)
    finally:
        engine.dispose()
    rows = []
    for name, b, a in (("ingress", before[0], after[0]), ("workers", before[1], after[1])):
        growth = (a - b) / b
        rows.append({
            "benchmark": "growth",
            "measure": f"{name} RSS over {total:,} events (after {warm:,} warm-up)",
            "figure": f"{b / 1024:.0f} -> {a / 1024:.0f} MiB ({growth:+.1%})",
            "target": "< +10%", "pass": growth < 0.10,
        })  # fmt: skip
    rows.append({"benchmark": "growth", "measure": "2xx answers in the memory run",
                 "figure": f"{ok + warm:,} of {total:,} sent", "target": "(all)",
                 "pass": ok == total - warm})  # fmt: skip
    return rows


def latency(
    url: str, rate: float, seconds: float, *, doorbell: bool, realistic: bool = False
) -> dict[str, float]:
    """p50/p99 seconds from received to effect committed at a steady `rate` per second of
    Pro-pack purchases, or of realistic checkouts (bench/checkouts.py), over `seconds` after
    WARMUP_SECONDS of the same stream."""
    run = ("bell" if doorbell else "sweep") + uuid.uuid4().hex[:6]
    engine = create_engine(url)
    try:
        with stack(url, ingress=True, sweeper=True) as s:
            assert s.ingress_port is not None
            if not doorbell:
                s.redis.stop()  # for everyone: only the sweeper, working rows itself, is left
            length = seconds + WARMUP_SECONDS
            count = int(rate * length)
            make = signed_checkouts if realistic else signed_purchases
            requests = make(s.ingress_port, run, 0, count)
            result = run_load(open_loop("127.0.0.1", s.ingress_port, requests, rate, length))
            wait_drained(engine, timeout=120)
        ours = WebhookEvent.delivery_id.like(f"evt_{run}_%")
        with engine.connect() as conn:
            lag = steady_lag(conn, ours, WebhookEvent.status == Status.DONE.value)
            dead = conn.scalar(
                select(func.count()).where(ours, WebhookEvent.status != Status.DONE.value)
            )
    finally:
        engine.dispose()
    return {**lag, "sent": result.sent, "ok": result.statuses.get(200, 0),
            "not_done": int(dead or 0)}  # fmt: skip


def steady_lag(conn: Any, *where: Any) -> dict[str, Any]:
    """Seconds from `received_at` to `processed_at` over the rows `where` selects: p50 and
    p99 over those received WARMUP_SECONDS or more after the first of them, `done` every
    row selected, and `p99_with_warmup` the p99 over all of them."""
    lag = func.extract("epoch", WebhookEvent.processed_at - WebhookEvent.received_at)
    first = select(func.min(WebhookEvent.received_at)).where(*where).scalar_subquery()
    warmup = literal(timedelta(seconds=WARMUP_SECONDS), Interval())
    steady = WebhookEvent.received_at >= first + warmup
    p50, p99 = conn.execute(
        select(
            func.percentile_cont(0.5).within_group(lag),
            func.percentile_cont(0.99).within_group(lag),
        ).where(*where, steady)
    ).one()
    every, done = conn.execute(
        select(func.percentile_cont(0.99).within_group(lag), func.count()).where(*where)
    ).one()
    return {"p50": float(p50), "p99": float(p99), "done": int(done),
            "p99_with_warmup": float(every)}  # fmt: skip


def measure_latency(
    url: str, rate: float, seconds: float, realistic_rate: float = 500.0
) -> list[dict[str, Any]]:
    engine = create_engine(url)
    try:
        seed(engine)
    finally:
        engine.dispose()
    bell = latency(url, rate, seconds, doorbell=True)
    checkouts = latency(url, realistic_rate, seconds, doorbell=True, realistic=True)
    swept = latency(url, rate, seconds, doorbell=False)
    bound = SWEEP_INTERVAL + 0.25
    rows = []
    for name, per_second, figures, target, limit in (
        ("Pro-pack purchases, doorbell", rate, bell, "p99 < 250 ms", 0.25),
        ("realistic checkouts, doorbell", realistic_rate, checkouts, "p99 < 100 ms", 0.1),
        ("Pro-pack purchases, Redis stopped, sweeper only", rate, swept,
         f"p99 < {bound * 1000:.0f} ms (interval {SWEEP_INTERVAL:.0f} s + 250 ms)", bound),
    ):  # fmt: skip
        rows.append({
            "benchmark": "latency",
            "measure": f"{int(per_second)}/s for {seconds:.0f} s after {WARMUP_SECONDS:.0f} "
                       f"s of warm-up, {name} ({figures['done']}/{figures['sent']} done)",
            "figure": f"p50 {figures['p50'] * 1000:.0f} ms, p99 {figures['p99'] * 1000:.0f} ms "
                      f"(with warm-up {figures['p99_with_warmup'] * 1000:.0f} ms)",
            "target": target,
            "pass": figures["p99"] < limit and figures["done"] == figures["sent"],
        })  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000, help="backlog size")
    args = parser.parse_args()
    with postgres_database() as url:
        rows = measure_backlog(url, args.events)
    print_table(rows)
    write_results("pipeline", rows, {"cores": os.cpu_count(), "events": args.events})


if __name__ == "__main__":
    main()
