"""What the sweeper leaves in Redis while no worker runs: a backlog of due rows, a real
`outbox sweep` (1 s interval) and a private redis-server, no worker, for a while; then the
events queue's length, and how many times each row is named by the messages waiting.

    .venv/bin/python -m bench.sweeper_flood [--rows 100000] [--minutes 5]

Each due row should be named once, and the queue should stop growing once every due row
is (RUNG_OUT_MAX rows at most).
"""

from __future__ import annotations

import argparse
import json
import os
import time
import uuid
from collections import Counter

import redis
from sqlalchemy import create_engine

from bench.common import postgres_database
from bench.workload import store_backlog
from processors.event_actor import QUEUE
from tests.services import OutboxProcess, RedisServer, outbox_env

SAMPLE_EVERY = 30.0  #: seconds between two looks at the queue


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000, help="due rows in the backlog")
    parser.add_argument("--minutes", type=float, default=5.0, help="how long no worker runs")
    args = parser.parse_args()
    load_before = os.getloadavg()
    with postgres_database() as url, RedisServer() as server:
        engine = create_engine(url)
        store_backlog(engine, uuid.uuid4().hex[:6], args.rows)
        engine.dispose()
        namespace = f"flood-{uuid.uuid4().hex[:6]}"
        env = outbox_env(url, redis_url=server.url, namespace=namespace, sweep_interval_seconds=1.0)
        client = redis.Redis.from_url(server.url)
        queue = f"{namespace}:{QUEUE}"
        started = time.monotonic()
        with OutboxProcess(["sweep"], env):
            while (elapsed := time.monotonic() - started) < args.minutes * 60:
                time.sleep(min(SAMPLE_EVERY, args.minutes * 60 - elapsed))
                print(
                    f"after {time.monotonic() - started:5.0f} s: {client.llen(queue)} messages",
                    flush=True,
                )
        named = Counter(
            row for body in client.hvals(f"{queue}.msgs") for row in json.loads(body)["args"][0]
        )
        print(f"rows in the backlog: {args.rows}; sweeper ran {args.minutes:g} min, no worker")
        print(f"queue length: {client.llen(queue)} messages")
        print(f"rows named: {len(named)} distinct, {sum(named.values())} in all, "
              f"at most {max(named.values(), default=0)} times one row")  # fmt: skip
        client.close()
    print(f"cores: {os.cpu_count()}; load average before {load_before}, after {os.getloadavg()}")


if __name__ == "__main__":
    main()
