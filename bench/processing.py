"""Processing benchmark: events per second from received to `done` with 2 worker processes on
Postgres + Redis, for a handler that writes one row; and the time from the ingress's answer to
`done` at a light steady load.

    .venv/bin/python -m bench.processing [--events 5000] [--rate 50] [--seconds 20]

Three runs, each on a fresh private database and Redis namespace:
- drain: `--events` rows already stored, rung all at once; workers only (the processors' own rate);
- end to end: `--events` signed webhooks sent to `outbox serve` by 16 senders while the workers
  run (ingress, processors and Postgres share the machine); rate = events / (last done − first
  received);
- steady: `--rate` webhooks per second for `--seconds`; latency = done − the answer's arrival
  at the sender (and, in `check`, done − the row's insert).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    func,
    insert,
    select,
)
from sqlalchemy.orm import Session

from bench.common import (
    POSTGRES_ADMIN,
    free_port,
    postgres_database,
    print_table,
    write_results,
)
from bench.ingress import SECRET, signed_requests
from bench.loadgen import closed_loop
from bench.loadgen import run as run_load
from ingress.signatures import github_signature
from outbox.handling import EventContext, Handler, HandlerTable
from outbox.models import Status, WebhookEvent
from outbox.settings import Settings
from outbox.store import IncomingEvent
from outbox.store import record as record_events

WORKER_PROCESSES = 2
WORKER_THREADS = 8
HANDLER_TABLE = "bench.processing:handler_table"
EVENT_TYPE = ("github", "issues.opened")  # what bench.ingress.signed_requests sends

metadata = MetaData()
effects = Table(
    "bench_effects",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("event_id", BigInteger, nullable=False),
    Column("delivery_id", String(255), nullable=False),
)


def write_one_row(session: Session, event: EventContext, _prepared: Any) -> None:
    session.execute(insert(effects).values(event_id=event.id, delivery_id=event.delivery_id))


def handler_table(_settings: Settings) -> HandlerTable:
    return {EVENT_TYPE: Handler(name="write_one_row", apply=write_one_row)}


@contextmanager
def deployment(with_ingress: bool, log_level: str) -> Iterator[dict[str, Any]]:
    """A private database, a Redis namespace, 2 worker processes, a sweeper, maybe an ingress."""
    from tests.services import WORKER_READY, OutboxProcess, outbox_env

    with postgres_database("outbox_bench_proc") as url, ExitStack() as stack:
        engine = create_engine(url)
        metadata.create_all(engine)
        stack.callback(engine.dispose)
        namespace = f"outbox-bench-{uuid.uuid4().hex[:8]}"
        stack.callback(_forget_namespace, namespace)
        env = outbox_env(
            url, namespace=namespace, handler_table=HANDLER_TABLE, github_webhook_secret=SECRET
        )
        env["LOG_LEVEL"] = log_level
        worker = OutboxProcess(
            ["worker", "-p", str(WORKER_PROCESSES), "-t", str(WORKER_THREADS)], env
        )
        stack.enter_context(worker)
        stack.enter_context(OutboxProcess(["sweep"], env))
        port = free_port()
        if with_ingress:
            stack.enter_context(OutboxProcess(["serve", "--port", str(port)], env, port=port))
        if logging.getLevelName(log_level.upper()) <= logging.INFO:
            worker.wait_for_output(WORKER_READY, count=WORKER_PROCESSES)
        else:
            time.sleep(5)  # quieter than INFO, the workers do not say when they are ready
        yield {"url": url, "engine": engine, "env": env, "port": port}


def _forget_namespace(namespace: str) -> None:
    import redis

    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    keys = list(client.scan_iter(match=f"{namespace}*"))
    if keys:
        client.delete(*keys)


def wait_all_done(engine: Any, total: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            done = conn.scalar(
                select(func.count())
                .select_from(WebhookEvent)
                .where(WebhookEvent.status == Status.DONE.value)
            )
        if done >= total:
            return
        time.sleep(0.05)
    raise RuntimeError(f"only {done} of {total} events done after {timeout} s")


def check_applied_once(engine: Any, total: int) -> str:
    with engine.connect() as conn:
        rows = conn.scalar(select(func.count()).select_from(effects))
        distinct = conn.scalar(select(func.count(func.distinct(effects.c.event_id))))
    if rows != total or distinct != total:
        raise RuntimeError(f"{rows} effect rows for {distinct} events, {total} expected")
    return f"{rows} effect rows for {total} events"


def drain(events: int, log_level: str) -> dict[str, Any]:
    """Stored rows rung all at once: the processors' own rate."""
    from processors.broker import setup_broker
    from processors.event_actor import ring_events

    with deployment(with_ingress=False, log_level=log_level) as dep:
        now = datetime.now(UTC)
        items = [
            IncomingEvent(source="github", delivery_id=f"drain-{n}", event_type=EVENT_TYPE[1],
                          raw_body=json.dumps({"action": "opened", "n": n}).encode(),
                          headers={"content-type": "application/json"}, verified_by="github#0")
            for n in range(events)
        ]  # fmt: skip
        with dep["engine"].begin() as conn:
            ids = [r.id for r in record_events(conn, items, now)]
        settings = Settings(
            database_url=dep["url"],
            redis_url=dep["env"]["REDIS_URL"],
            redis_namespace=dep["env"]["REDIS_NAMESPACE"],
        )
        broker = setup_broker(settings, in_process=False)
        started = time.perf_counter()
        ring_events(ids)
        wait_all_done(dep["engine"], events)
        elapsed = time.perf_counter() - started
        broker.close()
        once = check_applied_once(dep["engine"], events)
    return {
        "run": f"drain {events} stored rows",
        "events": events,
        "seconds": round(elapsed, 2),
        "events_per_s": round(events / elapsed),
        "p50_ms": "",
        "p99_ms": "",
        "check": once,
    }


def end_to_end(events: int, log_level: str) -> dict[str, Any]:
    """Webhooks sent as fast as 16 senders can while the workers apply them."""
    with deployment(with_ingress=True, log_level=log_level) as dep:
        requests = signed_requests(dep["port"], events, f"e2e-{uuid.uuid4().hex[:6]}")
        result = run_load(closed_loop("127.0.0.1", dep["port"], requests, 16, 600))
        ok = result.statuses.get(200, 0)
        wait_all_done(dep["engine"], ok)
        with dep["engine"].connect() as conn:
            first, last = conn.execute(
                select(func.min(WebhookEvent.received_at), func.max(WebhookEvent.processed_at))
            ).one()
        once = check_applied_once(dep["engine"], ok)
    elapsed = (last - first).total_seconds()
    return {
        "run": "end to end, 16 senders",
        "events": ok,
        "seconds": round(elapsed, 2),
        "events_per_s": round(ok / elapsed),
        "p50_ms": "",
        "p99_ms": "",
        "check": f"{once}; ingress alone answered {round(ok / result.elapsed)}/s",
    }


async def _steady_send(port: int, rate: float, seconds: float) -> dict[int, float]:
    """Post `rate` webhooks a second; the wall-clock time each answer came back, by row id."""
    answered: dict[int, float] = {}
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits) as client:

        async def one(n: int) -> None:
            body = json.dumps({"action": "opened", "installation": {"id": 42}, "n": n}).encode()
            headers = {
                "Content-Type": "application/json",
                "X-GitHub-Event": "issues",
                "X-GitHub-Delivery": f"steady-{uuid.uuid4().hex}",
                "X-Hub-Signature-256": github_signature(SECRET, body),
            }
            answer = await client.post("/webhooks/github", content=body, headers=headers)
            if answer.status_code == 200:
                answered[int(answer.json()["id"])] = time.time()

        started = time.perf_counter()
        tasks = []
        for n in range(int(rate * seconds)):
            delay = started + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(n)))
        await asyncio.gather(*tasks)
    return answered


def steady(rate: float, seconds: float, log_level: str) -> dict[str, Any]:
    """Latency at a light load, from the answer's arrival at the sender to `done`; the same
    from the row's insert (`received_at`, before its commit and answer) is in `check`.
    The ring goes out right after the commit, so on a starved sender the first figure can
    come out below zero: the second one cannot."""
    with deployment(with_ingress=True, log_level=log_level) as dep:
        answered = run_load(_steady_send(dep["port"], rate, seconds))
        wait_all_done(dep["engine"], len(answered))
        with dep["engine"].connect() as conn:
            times = {
                r.id: (r.received_at.timestamp(), r.processed_at.timestamp())
                for r in conn.execute(
                    select(WebhookEvent.id, WebhookEvent.received_at, WebhookEvent.processed_at)
                )
            }
        once = check_applied_once(dep["engine"], len(answered))
    from_insert = sorted(times[i][1] - times[i][0] for i in answered)
    from_answer = sorted(times[i][1] - at for i, at in answered.items())
    return {
        "run": f"steady {rate:g}/s for {seconds:g} s",
        "events": len(answered),
        "seconds": seconds,
        "events_per_s": "",
        "p50_ms": _ms(from_answer, 50),
        "p99_ms": _ms(from_answer, 99),
        "check": f"{once}; max {_ms(from_answer, 100)} ms; from the row's insert: "
        f"p50 {_ms(from_insert, 50)} ms, p99 {_ms(from_insert, 99)} ms",
    }


def _ms(ordered: list[float], p: float) -> float:
    return round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=5000, help="events in the rate runs")
    parser.add_argument("--rate", type=float, default=50.0, help="webhooks/s of the steady run")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the steady run")
    parser.add_argument("--log-level", default="INFO", help="LOG_LEVEL of every process")
    args = parser.parse_args()

    rows = [
        drain(args.events, args.log_level),
        end_to_end(args.events, args.log_level),
        steady(args.rate, args.seconds, args.log_level),
    ]
    with psycopg.connect(POSTGRES_ADMIN) as conn:
        version = conn.execute("SHOW server_version").fetchone()
    meta = {
        "cores": os.cpu_count(),
        "postgres": version[0] if version else "?",
        "workers": f"{WORKER_PROCESSES} processes x {WORKER_THREADS} threads (outbox worker)",
        "handler": "writes one row in the transaction that marks the event done",
        "command": "python -m bench.processing "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
    }
    print_table(rows)
    for key, value in meta.items():
        print(f"{key}: {value}")
    write_results("processing", rows, meta)


if __name__ == "__main__":
    main()
