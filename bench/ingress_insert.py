"""The CPU of one batch INSERT of the ingress, by two drivers: the prepared statement sent
through libpq (outbox/driver/libpq.py, what the ingress runs) and psycopg's own `execute` of the
same statement (prepared, binary parameters where psycopg chooses them).

    .venv/bin/python -m bench.ingress_insert [--rows 16] [--batches 300] [--rounds 2]

Each batch is `--rows` 4 KB GitHub deliveries, new ones; the client's CPU is this process's
(time.process_time), Postgres's the backend's (from /proc). After each run the first batch
is stored again and must come back as duplicates only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import psycopg

from bench.common import cpu_seconds, postgres_database
from bench.ingress import github_body
from bench.pipeline import conninfo
from ingress.github import github_event
from outbox import store
from outbox.db import utcnow
from outbox.store import IncomingEvent, Recorded

Record = Callable[
    [psycopg.AsyncConnection[Any], Sequence[IncomingEvent]], Awaitable[list[Recorded]]
]

#: The ingress's statement with psycopg's placeholders: the rows as text, the bodies binary.
_PSYCOPG_INSERT = store._INSERT_TEMPLATE.format(rows="%t", bodies="%b")


async def through_libpq(
    conn: psycopg.AsyncConnection[Any], events: Sequence[IncomingEvent]
) -> list[Recorded]:
    return await store.record_async(conn, events, utcnow())


async def through_psycopg(
    conn: psycopg.AsyncConnection[Any], events: Sequence[IncomingEvent]
) -> list[Recorded]:
    keys = [store._key(item) for item in events]
    unique = store._first_of_each_key(keys, events)
    rows, bodies = store._postgres_params(unique.values(), utcnow())
    cursor = await conn.execute(_PSYCOPG_INSERT, (rows.decode(), bodies), prepare=True, binary=True)
    inserted = store._by_key(await cursor.fetchall())
    missing = [k for k in unique if k not in inserted]
    existing = {}
    if missing:
        params = ([s for s, _ in missing], [d for _, d in missing])
        cursor = await conn.execute(store._POSTGRES_EXISTING, params)
        existing = store._by_key(await cursor.fetchall())
    return store._answers(keys, inserted, existing)


def deliveries(rows: int) -> list[IncomingEvent]:
    run = uuid.uuid4().hex[:8]
    events = []
    for n in range(rows):
        delivery = f"{run}-{n}"
        headers = {
            "content-type": "application/json",
            "x-github-event": "issues",
            "x-github-delivery": delivery,
            "x-hub-signature-256": "sha256=" + "0" * 64,
        }
        events.append(github_event(github_body(n), headers, delivery, "issues", "github#0"))
    return events


async def measure(url: str, record: Record, rows: int, batches: int) -> tuple[float, float]:
    """Client and Postgres CPU µs per batch."""
    conn = await psycopg.AsyncConnection.connect(conninfo(url), autocommit=True)
    try:
        backend = [conn.info.backend_pid]
        prepared = [deliveries(rows) for _ in range(batches)]
        await record(conn, deliveries(rows))  # prepares the statement
        client, server = time.process_time(), cpu_seconds(backend)
        for batch in prepared:
            answers = await record(conn, batch)
            assert not any(a.duplicate for a in answers)
        client, server = time.process_time() - client, cpu_seconds(backend) - server
        assert all(a.duplicate for a in await record(conn, prepared[0]))
    finally:
        await conn.close()
    return client / batches * 1e6, server / batches * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
    with postgres_database() as url:
        for round_ in range(1, args.rounds + 1):
            for name, record in (("libpq.py", through_libpq), ("psycopg", through_psycopg)):
                client, server = asyncio.run(measure(url, record, args.rows, args.batches))
                print(
                    f"round {round_}  {name:9} {args.rows} rows: client {client:.0f} µs, "
                    f"Postgres {server:.0f} µs a batch"
                )


if __name__ == "__main__":
    main()
