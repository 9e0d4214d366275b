"""The processors as real OS processes: kill -9 workers, stop Redis, stop Postgres, two workers.

Each test runs `outbox worker` / `outbox sweep` (and `outbox serve` where webhooks arrive)
as subprocesses on its own database and its own Redis namespace (or its own redis-server
or PostgreSQL cluster when it stops one), with the test handler of handlers.py, whose
effect rows say how many times each event was applied.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, func, select

from outbox.db import make_engine
from outbox.models import Status, WebhookEvent
from processors.broker import setup_broker
from processors.event_actor import ring_events
from tests.conftest import STRIPE_SECRET, create_postgres_database, drop_postgres_database
from tests.factories import record, stripe_event_body, stripe_headers
from tests.processors.handlers import (
    HANDLER_TABLE,
    TEST_EVENT_TYPE,
    create_effects_table,
    effect_counts,
    effect_rows,
    scripted_event,
)
from tests.services import (
    WORKER_READY,
    OutboxProcess,
    PostgresCluster,
    RedisServer,
    free_port,
    fresh_namespace,
    outbox_env,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

#: Settings of every process here: a short lease so killed work comes back quickly.
FAST = {
    "lease_seconds": 2,
    "retry_base_seconds": 0.2,
    "retry_max_delay_seconds": 0.5,
    "retry_max_attempts": 3,
    "sweep_interval_seconds": 0.3,
    "stripe_mode": "any",
}


@pytest.fixture
def database(postgres_url: str) -> Iterator[tuple[str, Engine]]:
    """A private migrated Postgres database (the processes share it with the test)."""
    from outbox.migrate import upgrade

    url = create_postgres_database("outbox_proc")
    upgrade(url)
    engine = make_engine(url, pool_size=2)
    create_effects_table(engine)
    try:
        yield url, engine
    finally:
        engine.dispose()
        drop_postgres_database(url)


def env_for(url: str, redis_url: str, **extra: object) -> dict[str, str]:
    return outbox_env(
        url,
        redis_url=redis_url,
        namespace=fresh_namespace(),
        handler_table=HANDLER_TABLE,
        **{**FAST, **extra},
    )


def ring_from_here(env: dict[str, str], ids: list[int]) -> None:
    """Ring the workers over the same Redis namespace, as the ingress would."""
    from outbox.settings import Settings

    settings = Settings(
        database_url=env["DATABASE_URL"],
        redis_url=env["REDIS_URL"],
        redis_namespace=env["REDIS_NAMESPACE"],
    )
    broker = setup_broker(settings, in_process=False)
    try:
        for event_id in ids:
            ring_events([event_id])
    finally:
        broker.close()


def status_counts(engine: Engine) -> dict[str, int]:
    query = select(WebhookEvent.status, func.count()).group_by(WebhookEvent.status)
    with engine.connect() as conn:
        return {status: n for status, n in conn.execute(query)}


def all_done(engine: Engine, total: int) -> bool:
    return status_counts(engine).get(Status.DONE, 0) == total


def rows(engine: Engine) -> list[WebhookEvent]:
    with engine.connect() as conn:
        return list(conn.execute(select(WebhookEvent).order_by(WebhookEvent.id)))


def doorbell_failures(client: httpx.Client) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("outbox_doorbell_failures_total "):
            return float(line.split()[1])
    return 0.0


def announced(path: Path) -> list[tuple[int, int]]:
    """(event id, worker pid) for each handler run that announced itself."""
    if not path.exists():
        return []
    return [
        (int(event), int(pid))
        for event, pid in (line.split() for line in path.read_text().splitlines() if line)
    ]


def test_workers_killed_mid_handler_leave_every_event_done_and_applied_once(
    database, redis_url, tmp_path
):
    url, engine = database
    marker = tmp_path / "started"
    # Enough attempts that an event killed several times is still not given up on.
    env = env_for(url, redis_url, retry_max_attempts=10)
    ids: list[int] = []

    def more_events(count: int) -> None:
        items = [
            scripted_event(script={"sleep": 0.5, "announce": str(marker)} if n % 2 else {})
            for n in range(count)
        ]
        new = [r.id for r in record(engine, *items)]
        ids.extend(new)
        ring_from_here(env, new)

    kills: list[int] = []
    sweeper = OutboxProcess(["sweep"], env, log_dir=tmp_path)
    worker = OutboxProcess(["worker", "-p", "1", "-t", "4"], env, log_dir=tmp_path)
    with sweeper:
        worker.start()
        worker.wait_for_output(WORKER_READY)
        more_events(20)
        seen = 0
        deadline = time.monotonic() + 90
        while len(kills) < 5 and time.monotonic() < deadline:
            runs = announced(marker)
            if len(runs) > seen:
                seen = len(runs)
                event_id, pid = runs[-1]
                try:
                    os.kill(pid, signal.SIGKILL)  # in the middle of that event's handler
                except ProcessLookupError:
                    continue  # a worker of an earlier generation, already gone
                kills.append(event_id)
                worker.wait(30)  # Dramatiq's parent exits when its worker process dies
                worker = OutboxProcess(["worker", "-p", "1", "-t", "4"], env, log_dir=tmp_path)
                worker.start()
                worker.wait_for_output(WORKER_READY)
                seen = len(announced(marker))
            elif all_done(engine, len(ids)):
                more_events(6)  # the run goes on until there were enough kills
            time.sleep(0.02)
        wait_until(lambda: all_done(engine, len(ids)), timeout=60, what="every event done")
        worker.stop()
    assert len(kills) == 5, worker.output()[-3000:]
    assert status_counts(engine) == {Status.DONE: len(ids)}
    assert effect_counts(engine) == dict.fromkeys(ids, 1)
    by_id = {r.id: r for r in rows(engine)}
    # Each killed run was tried again; it counts as an attempt only when it ran alone.
    assert all(by_id[k].interruptions >= 1 for k in kills)


def test_webhooks_keep_getting_2xx_while_redis_is_down_and_are_all_processed_after(
    database, tmp_path
):
    url, engine = database
    port = free_port()
    with RedisServer() as redis_server:
        env = env_for(url, redis_server.url, stripe_webhook_secret=STRIPE_SECRET)
        serve = OutboxProcess(["serve", "--port", str(port)], env, port=port, log_dir=tmp_path)
        worker = OutboxProcess(["worker", "-p", "1", "-t", "4"], env, log_dir=tmp_path)
        sweeper = OutboxProcess(["sweep"], env, log_dir=tmp_path)
        with serve, worker, sweeper, httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            worker.wait_for_output(WORKER_READY)

            def post(n: int) -> int:
                event = json.loads(stripe_event_body({"id": f"obj_{n}"}, TEST_EVENT_TYPE))
                body = json.dumps(event).encode()
                answer = client.post("/webhooks/stripe", content=body, headers=stripe_headers(body))
                assert answer.status_code == 200, answer.text
                return int(answer.json()["id"])

            before = [post(n) for n in range(10)]
            wait_until(lambda: all_done(engine, 10), what="the first webhooks to be done")
            redis_server.stop()
            during = [post(n) for n in range(10, 40)]  # every one answered 200
            wait_until(lambda: doorbell_failures(client) > 0, what="a failed ring")
            assert status_counts(engine) == {Status.DONE: 10, Status.PENDING: 30}
            redis_server.start()  # empty: the rings sent during the outage are gone
            wait_until(lambda: all_done(engine, 40), timeout=60, what="everything to be done")
    assert effect_counts(engine) == dict.fromkeys(before + during, 1)


def test_postgres_going_away_mid_processing_retries_rows_without_losing_or_doubling(
    redis_url, tmp_path
):
    marker, go = tmp_path / "started", tmp_path / "go"
    with PostgresCluster() as cluster:
        url = cluster.create_database()
        engine = make_engine(url, pool_size=2)
        create_effects_table(engine)
        items = [
            scripted_event(script={"announce": str(marker), "hold": str(go)} if n == 0 else {})
            for n in range(30)
        ]
        ids = [r.id for r in record(engine, *items)]
        env = env_for(url, redis_url)
        worker = OutboxProcess(["worker", "-p", "1", "-t", "2"], env, log_dir=tmp_path)
        sweeper = OutboxProcess(["sweep"], env, log_dir=tmp_path)
        with worker, sweeper:
            worker.wait_for_output(WORKER_READY)
            ring_from_here(env, ids)
            wait_until(lambda: announced(marker), what="a handler to be running")
            engine.dispose()
            cluster.stop()  # immediate: the held handler's transaction dies with it
            go.touch()  # the handler goes on, into a database that is gone
            time.sleep(2.0)
            cluster.start()
            wait_until(lambda: all_done(engine, len(ids)), timeout=60, what="all done")
            assert worker.running(), worker.output()[-3000:]
        counts = effect_counts(engine)
        by_id = {r.id: r for r in rows(engine)}
        engine.dispose()
    assert counts == dict.fromkeys(ids, 1)
    runs = [event_id for event_id, _ in announced(marker)]
    assert runs == [ids[0], ids[0]]  # cut off once, applied by the second run
    # The cut-off run held other rows too: not charged as an attempt, applied alone after.
    assert (by_id[ids[0]].attempts, by_id[ids[0]].interruptions) == (1, 1)


def test_two_workers_apply_same_object_events_one_at_a_time_in_created_order(
    database, redis_url, tmp_path
):
    url, engine = database
    env = env_for(url, redis_url)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    objects = ["sub_a", "sub_b", "cus_c", "sub_d", "sub_e", "cus_f"]
    workers = [
        # One thread each, handlers of 80 ms (300 ms for the first events). A batch takes
        # the next event of each of its objects in the commit that finishes the one before,
        # so the objects whose events start later (from the second step on) are taken by
        # the worker that is free meanwhile: both take part.
        OutboxProcess(["worker", "-p", "1", "-t", "1"], env, log_dir=tmp_path)
        for _ in range(2)
    ]
    sweeper = OutboxProcess(["sweep"], env, log_dir=tmp_path)
    created: dict[str, list[tuple[datetime, int]]] = {name: [] for name in objects}
    with workers[0], workers[1], sweeper:
        for worker in workers:
            worker.wait_for_output(WORKER_READY)
        for step in range(6):
            # A stream: each object gets two more events per step, the later-created one
            # stored first, each rung on its own as the ingress would.
            batch = [
                (name, t0 + timedelta(seconds=2 * step + later))
                for later in (1, 0)
                for name in (objects if step else objects[:3])
            ]
            stored = record(engine, *(
                scripted_event(object_id=name, created=at, script={"sleep": 0.08 if step else 0.3})
                for name, at in batch
            ))  # fmt: skip
            for (name, at), result in zip(batch, stored, strict=True):
                created[name].append((at, result.id))
            ring_from_here(env, [r.id for r in stored])
            time.sleep(0.1)
        doomed = [r.id for r in record(engine, scripted_event(script={"fail": "crash"}))]
        ring_from_here(env, doomed)
        total = sum(len(events) for events in created.values()) + 1
        wait_until(
            lambda: (
                sum(status_counts(engine).get(s, 0) for s in (Status.DONE, Status.DEAD)) == total
            ),
            timeout=60,
            what="every event to finish",
        )
    applied = effect_rows(engine)
    for name in objects:
        mine = [e for e in applied if e.object_id == name]
        assert [e.event_id for e in mine] == [i for _, i in sorted(created[name])]
        for earlier, later in itertools.pairwise(mine):
            assert later.started >= earlier.finished  # never two at the same time
    assert len({e.pid for e in applied}) == 2  # both workers took part
    [dead] = [r for r in rows(engine) if r.id in doomed]
    assert dead.status == Status.DEAD and dead.attempts == FAST["retry_max_attempts"]
    assert dead.last_error == "RuntimeError: the test says: crash"
