"""Each operator console page's answer time with a million rows in webhook_events.

    .venv/bin/python -m bench.console [--rows 1000000] [--requests 15]

A private database on the shared Postgres server (127.0.0.1:5432), dropped afterwards,
filled by generate_series (FILL_SQL): `--rows` small rows received over the last 7 days,
newest ids newest (about 18,000 in the chart's last 3 hours at a million), GitHub and
Stripe types, ~0.5 % dead with a failed attempt each, ~9 % skipped, a few hundred
pending, five rows per Stripe object, 1,000 accounts of which one has 2,000 ledger
entries; then VACUUM ANALYZE. `outbox console` runs as its own process; each page is
fetched once to warm up, then `--requests` times in a row, signed in with a session
cookie; the median and the 90th percentile of the whole answer (HTTP, reads, rendering)
are printed per page, with the machine's cores and load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import httpx
import psycopg

from bench.common import ROOT, free_port, machine_facts, postgres_database, print_table

TOKEN = "bench-console-token-0123456789abcdef"
ACCOUNT = 1_000_001

FILL_SQL = """
INSERT INTO webhook_events (source, delivery_id, event_type, livemode, account_id, object_id,
    provider_created_at, raw_body, headers, received_at, verified_by, backfilled, status,
    attempts, next_attempt_at, last_error, processed_at)
SELECT CASE WHEN github THEN 'github' ELSE 'stripe' END,
       CASE WHEN github THEN 'guid-' || g ELSE 'evt_bench_' || g END,
       CASE WHEN github THEN (ARRAY['push', 'pull_request.opened', 'issues.opened',
                                    'installation.created'])[1 + g %% 4]
            ELSE (ARRAY['checkout.session.completed', 'customer.subscription.updated',
                        'invoice.paid', 'charge.refunded', 'invoice.payment_failed'])[1 + g %% 5]
       END,
       CASE WHEN github THEN NULL ELSE false END,
       %(account)s + g %% 1000,
       CASE WHEN github THEN NULL ELSE 'sub_bench_' || (g / 15) END,
       received, '\\x7b7d'::bytea, '{"content-type": "application/json"}', received,
       CASE WHEN github THEN 'github#0' ELSE 'stripe#0' END, false,
       status, CASE WHEN status = 'pending' THEN 0 ELSE 1 END,
       CASE WHEN status = 'pending' THEN received END,
       CASE WHEN status = 'dead' THEN 'provider said 500 for row ' || g END,
       CASE WHEN status <> 'pending' THEN received + interval '1 second' END
FROM (
    SELECT g, g %% 3 = 0 AS github,
           now() - (%(rows)s - g) * interval '7 days' / %(rows)s AS received,
           CASE WHEN g %% 200 = 0 THEN 'dead'
                WHEN g %% 11 = 0 THEN 'skipped'
                WHEN g > %(rows)s - 2000 AND g %% 7 = 0 THEN 'pending'
                ELSE 'done' END AS status
    FROM generate_series(1, %(rows)s) AS g
) AS rows
"""
FAILURES_SQL = """
INSERT INTO webhook_event_failures (event_id, attempt, failed_at, error, outcome, worker)
SELECT id, 1, processed_at, last_error, 'dead', 'bench' FROM webhook_events WHERE status = 'dead'
"""
ACCOUNTS_SQL = """
INSERT INTO accounts (id, login, kind, created_at)
SELECT %(account)s + a, 'bench-' || a, 'Organization', now() FROM generate_series(0, 999) AS a;
INSERT INTO credit_ledger (key, account_id, amount, debt_change, reason, created_at)
SELECT 'bench:' || n, %(account)s, 1, 0, 'bench grant', now() - n * interval '1 minute'
FROM generate_series(1, 2000) AS n
"""


def fill(url: str, rows: int) -> dict[str, int]:
    """The rows of FILL_SQL and the rest; some ids the pages then look at."""
    conninfo = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(FILL_SQL, {"rows": rows, "account": ACCOUNT})
        conn.execute(FAILURES_SQL)
        for statement in ACCOUNTS_SQL.split(";"):
            conn.execute(statement, {"account": ACCOUNT})
        conn.execute("VACUUM ANALYZE")
        newest_stripe = conn.execute(
            "SELECT max(id) FROM webhook_events WHERE source = 'stripe'"
        ).fetchone()
        newest_dead = conn.execute("SELECT max(id) FROM webhook_events WHERE status = 'dead'")
        return {"stripe": newest_stripe[0], "dead": newest_dead.fetchone()[0]}  # type: ignore[index]


def pages(ids: dict[str, int]) -> list[tuple[str, str]]:
    return [
        ("overview", "/"),
        ("events", "/events"),
        ("events: dead, 1 day", "/events?status=dead&since=1d"),
        ("events: type invoice.*, 1 day", "/events?type=invoice.*&since=1d"),
        ("events: one account", f"/events?account={ACCOUNT + 7}"),
        ("events: page 2", f"/events?before_id={ids['stripe'] - 49}"),
        ("event + timeline", f"/events/{ids['stripe']}"),
        ("dead event", f"/events/{ids['dead']}"),
        ("account", f"/accounts/{ACCOUNT}"),
        ("jobs and usage", "/attention"),
        ("replay plan: dead, 1 day", "/replay?status=dead&since=1d"),
    ]


def measure(base: str, cookie: str, path: str, requests: int) -> list[float]:
    with httpx.Client(base_url=base, headers={"cookie": cookie}, timeout=30) as client:
        answer = client.get(path)
        if answer.status_code != 200:
            raise RuntimeError(f"{path}: {answer.status_code} {answer.text[:300]}")
        times = []
        for _ in range(requests):
            started = time.perf_counter()
            client.get(path).raise_for_status()
            times.append((time.perf_counter() - started) * 1000)
        return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=15)
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    with postgres_database("scratch_console") as url:
        started = time.monotonic()
        ids = fill(url, args.rows)
        print(f"filled {args.rows:,} rows in {time.monotonic() - started:.0f} s", flush=True)
        port = free_port()
        env = {**os.environ, "DATABASE_URL": url, "CONSOLE_TOKEN": TOKEN,
               "REDIS_URL": "redis://127.0.0.1:1/0", "LOG_LEVEL": "WARNING"}  # fmt: skip
        console = subprocess.Popen(
            [str(ROOT / ".venv" / "bin" / "outbox"), "console", "--port", str(port)],
            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            assert console.stdout is not None
            console.stdout.readline()  # "outbox: operator console on …"
            from outbox.console.auth import SESSION_COOKIE, ConsoleKeys

            cookie = f"{SESSION_COOKIE}={ConsoleKeys(TOKEN).new_session()}"
            rows: list[dict[str, Any]] = []
            for name, path in pages(ids):
                times = sorted(measure(f"http://127.0.0.1:{port}", cookie, path, args.requests))
                rows.append({
                    "page": name,
                    "median ms": f"{statistics.median(times):.1f}",
                    "p90 ms": f"{times[int(len(times) * 0.9) - 1]:.1f}",
                })  # fmt: skip
        finally:
            console.terminate()
            console.wait(10)
    print_table(rows)
    facts = machine_facts(load_before)
    print(f"rows {args.rows:,}; {args.requests} requests a page; cores {facts['cores']}; "
          f"load average before {facts['load_average_before']}, after "
          f"{facts['load_average_after']}; {facts['at']}")  # fmt: skip
    sys.stdout.flush()


if __name__ == "__main__":
    main()
