"""Fault drills: a mixed run of webhooks, one fault at a time, and not one effect lost or doubled.

Every drill delivers each webhook at least twice (some 20 times, some copies at once) in
shuffled order; on top of that, each drill adds one fault: workers killed with
SIGKILL every few seconds, Redis stopped and restarted, Postgres restarted. The end state
(ledger balances, purchases, subscriptions, pull requests on the fake GitHub, meter events
on the fake Stripe) must be exactly what the events call for.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from outbox.migrate import upgrade
from tests.conftest import _require, create_postgres_database, drop_postgres_database
from tests.drills import DRILLS
from tests.drills.harness import Drill, Fault, drill
from tests.drills.scenario import Scenario
from tests.services import PostgresCluster

pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.timeout(240),
    pytest.mark.xdist_group(DRILLS),
]

KILLS = 6  #: workers killed with SIGKILL during one drill
KILL_EVERY = 3.0  #: seconds between two kills
OUTAGE = 4.0  #: seconds Redis or Postgres stays down
OUTAGE_AFTER = 3.0  #: seconds into the send phase when it goes down


@pytest.fixture
def shared_database() -> Iterator[str]:
    try:
        url = create_postgres_database("outbox_drill")
    except Exception as exc:
        _require("PostgreSQL", exc)
        raise
    try:
        upgrade(url)
        yield url
    finally:
        drop_postgres_database(url)


def kill_workers(d: Drill, stop: threading.Event) -> None:
    """SIGKILL a random worker process (and its Dramatiq children) every few seconds."""
    for _ in range(KILLS):
        if stop.wait(KILL_EVERY):
            return
        victim = d.rng.choice(d.workers)
        victim.kill()
        d.faults_done.append(f"killed worker {victim.pid}")
        d.restart_worker(victim)


def stop_redis(d: Drill, stop: threading.Event) -> None:
    """Redis goes away (a crash: its queued messages are lost) and comes back empty."""
    stop.wait(OUTAGE_AFTER)
    d.redis.stop()
    d.faults_done.append("redis stopped")
    stop.wait(OUTAGE)
    d.redis.start()
    d.faults_done.append("redis started")


def durable(cluster: PostgresCluster, url: str) -> None:
    name = url.rsplit("/", 1)[1]
    conninfo = f"host=127.0.0.1 port={cluster.port} user=postgres dbname=postgres"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = on')


def run_drill(url: str, tmp_path: Path, fault: Fault | None, seed: int) -> Drill:
    scenario = Scenario.build(seed)
    assert scenario.deliveries >= 2000
    with drill(url, scenario, tmp_path) as d:
        sender = d.run(scenario, fault, seed)
        d.check(scenario, sender)
        return d


def test_duplicated_concurrent_and_shuffled_deliveries_apply_each_effect_once(
    shared_database: str, tmp_path: Path
) -> None:
    run_drill(shared_database, tmp_path, None, seed=1)


def test_workers_killed_every_few_seconds_lose_and_double_nothing(
    shared_database: str, tmp_path: Path
) -> None:
    d = run_drill(shared_database, tmp_path, kill_workers, seed=2)
    assert any(f.startswith("killed") for f in d.faults_done)


def test_redis_stopped_and_restarted_mid_run_loses_and_doubles_nothing(
    shared_database: str, tmp_path: Path
) -> None:
    d = run_drill(shared_database, tmp_path, stop_redis, seed=3)
    assert d.faults_done == ["redis stopped", "redis started"]


def test_postgres_restarted_mid_run_loses_and_doubles_nothing(tmp_path: Path) -> None:
    with PostgresCluster() as cluster:
        url = cluster.create_database()
        # The ingress's "2xx means committed" needs commits that are on disk before COMMIT
        # returns, as in production: pinned for this database, whatever the cluster's default.
        durable(cluster, url)

        def restart_postgres(d: Drill, stop: threading.Event) -> None:
            stop.wait(OUTAGE_AFTER)
            cluster.stop()
            d.faults_done.append("postgres stopped")
            stop.wait(OUTAGE)
            cluster.start()
            d.faults_done.append("postgres started")

        d = run_drill(url, tmp_path, restart_postgres, seed=4)
        assert d.faults_done == ["postgres stopped", "postgres started"]
