"""The mix's drain rate with 1,000,000 finished rows in the table against an empty one,
paired in one run.

    .venv/bin/python -m bench.mix_growth [--events 20000] [--rounds 3] [--shared]

Two databases on one server, made alike before timing: the seed catalog and accounts, 500
installations applied (bench/mix.py), then `VACUUM ANALYZE`. One of them ("full") also
holds FINISHED_ROWS finished rows, put in before that vacuum and shaped as the mix leaves
its rows (FINISHED_ROWS_SQL): GitHub deliveries under random UUIDs, Stripe events, account
and object ids, done or skipped, received over the last 30 days. Then `--rounds` rounds of
the mix (bench/mix.py: refundable purchases drained before timing, then the mix through
the ingress, drained by `outbox worker -p 2` with `outbox sweep`) on each database in turn,
which goes first alternating from pair to pair so that neither side always meets the
machine later; every effect checked exact after every round. The target's ratio is the
full side's median over the empty side's median; each pair's ratio is shown beside it.

By default the databases live on a PostgreSQL cluster of the benchmark's own, started on
--port with production's settings (bench.common.PRODUCTION_SETTINGS: autovacuum on, fsync
on) and the shared server's shared_buffers, stopped afterwards; `--shared` runs them on
the shared server at 127.0.0.1:5432 instead (autovacuum off on this machine). The private
cluster loads pg_stat_statements: after the rounds, the statements that took the most
server time on each side are printed, per row drained.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import psycopg
from sqlalchemy import create_engine

from bench import mix, mix_workload
from bench.common import (
    add_server_arguments,
    describe_server,
    machine_facts,
    postgres,
    postgres_database,
    print_meta,
    print_table,
    reset_statements,
    top_statements,
)
from bench.common import write_results as write
from bench.pipeline import conninfo
from bench.workload import ACCOUNTS, WELCOME_CREDITS, seed

FINISHED_ROWS = 1_000_000
#: Finished rows as the mix leaves them: 55 % GitHub deliveries (a random UUID each, the
#: installation and account of an installed account), the rest Stripe events of the
#: mix's types (evt_ ids, an object id each, the account), 90 % done and 10 % skipped,
#: received over the 30 days before now. The bodies are small: a finished row's body is
#: never read again, and `outbox purge` drops the old ones.
FINISHED_ROWS_SQL = """
INSERT INTO webhook_events (source, delivery_id, event_type, livemode, installation_id,
    account_id, object_id, provider_created_at, raw_body, headers, received_at, verified_by,
    backfilled, status, attempts, next_attempt_at, last_error, processed_at)
SELECT CASE WHEN github THEN 'github' ELSE 'stripe' END,
       CASE WHEN github THEN gen_random_uuid()::text ELSE 'evt_finished_' || g END,
       CASE WHEN github THEN (ARRAY['push', 'pull_request', 'issues', 'issue_comment',
                                    'check_run', 'installation_repositories'])[1 + g %% 6]
            ELSE (ARRAY['checkout.session.completed', 'customer.subscription.updated',
                        'invoice.paid', 'charge.refunded', 'payment_intent.succeeded'])[1 + g %% 5]
       END,
       CASE WHEN github THEN NULL ELSE false END,
       CASE WHEN github THEN 10000000 + account END,
       account,
       CASE WHEN github THEN NULL ELSE 'obj_finished_' || (g %% 200000) END,
       received, '\\x7b7d'::bytea, '{}', received,
       CASE WHEN github THEN 'github#0' ELSE 'stripe#0' END, false,
       CASE WHEN g %% 10 = 0 THEN 'skipped' ELSE 'done' END, 1, NULL,
       CASE WHEN g %% 10 = 0 THEN 'no handler' END, received
  FROM (SELECT g, random() < 0.55 AS github, 1 + (g::bigint * 7919) %% 500 AS account,
               now() - interval '30 days' * (1 - g::float8 / %(rows)s) AS received
          FROM generate_series(1, %(rows)s) AS g) AS r
"""


def prepare(url: str, finished: int) -> mix_workload.Expected:
    """Seed and installations (applied), `finished` finished rows, then VACUUM ANALYZE."""
    expected = mix_workload.Expected()
    engine = create_engine(url)
    try:
        seed(engine)
    finally:
        engine.dispose()
    for account_id in range(1, ACCOUNTS + 1):
        expected.add(account_id, WELCOME_CREDITS)
    mix.deliver_and_drain(url, mix_workload.installations())
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        if finished:
            conn.execute(FINISHED_ROWS_SQL, {"rows": finished})
            row = conn.execute("SELECT count(*) FROM webhook_events WHERE status = 'skipped'")
            expected.skipped += int(row.fetchone()[0])  # type: ignore[index]
        conn.execute("VACUUM ANALYZE")
    return expected


def check(url: str, expected: mix_workload.Expected) -> list[str]:
    engine = create_engine(url)
    try:
        return mix.check(engine, expected)
    finally:
        engine.dispose()


def last_id(url: str) -> int:
    with psycopg.connect(conninfo(url)) as conn:
        row = conn.execute("SELECT coalesce(max(id), 0) FROM webhook_events").fetchone()
    return int(row[0]) if row else 0


@contextmanager
def databases(shared: bool, port: int | None) -> Iterator[tuple[str, str, str]]:
    """(admin conninfo, empty database URL, full database URL), dropped afterwards."""
    with ExitStack() as stack:
        admin = stack.enter_context(postgres(shared, port))
        empty = stack.enter_context(postgres_database("outbox_bench_empty", admin))
        full = stack.enter_context(postgres_database("outbox_bench_full", admin))
        yield admin, empty, full


def measure(
    events: int, rounds: int, *, shared: bool = False, port: int | None = None,
    finished: int = FINISHED_ROWS,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:  # fmt: skip
    rates: dict[str, list[float]] = {"empty": [], "full": []}
    problems: list[str] = []
    stats: dict[str, Any] = {}
    with databases(shared, port) as (admin, empty_url, full_url):
        urls = {"empty": empty_url, "full": full_url}
        started = time.time()
        expected = {side: prepare(url, finished if side == "full" else 0)
                    for side, url in urls.items()}  # fmt: skip
        setup_seconds = time.time() - started
        first = {side: last_id(url) for side, url in urls.items()}
        if not shared:
            reset_statements(admin)
        for round_ in range(rounds):
            order = ("empty", "full") if round_ % 2 == 0 else ("full", "empty")
            for side in order:
                run = f"g{round_}{side[0]}"
                rates[side].append(mix.one_round(urls[side], "mix", run, events, expected[side]))
                problems += [f"{side}: {p}" for p in check(urls[side], expected[side])]
        if not shared:
            drained = {side: last_id(url) - first[side] for side, url in urls.items()}
            stats = {side: top_statements(admin, url, drained[side]) for side, url in urls.items()}
        server = describe_server(admin)
    meta = {"rates": rates, "setup_seconds": round(setup_seconds), "server": server,
            "statements": stats}  # fmt: skip
    return rows(rates, problems, events, rounds, finished, str(meta["server"])), meta


def rows(
    rates: dict[str, list[float]],
    problems: list[str],
    events: int,
    rounds: int,
    finished: int,
    server: str,
) -> list[dict[str, Any]]:
    median = {side: statistics.median(values) for side, values in rates.items()}
    pairs = [f / e for e, f in zip(rates["empty"], rates["full"], strict=True)]
    ratio = median["full"] / median["empty"]

    def row(measure: str, figure: str, target: str, passed: Any) -> dict[str, Any]:
        return {"benchmark": "mix growth", "measure": measure, "figure": figure,
                "target": target, "pass": passed}  # fmt: skip

    shown = {side: ", ".join(f"{v:,.0f}" for v in values) for side, values in rates.items()}
    return [
        row(f"the mix, {events:,} a round, empty table ({server})",
            f"median {median['empty']:,.0f}/s of {shown['empty']}", "(baseline)", ""),
        row(f"the mix, {finished:,} finished rows in the table",
            f"median {median['full']:,.0f}/s of {shown['full']}", "(measured)", ""),
        row("full / empty table",
            f"{ratio:.2f}x (pairs {', '.join(f'{p:.2f}x' for p in pairs)})", ">= 0.9x",
            ratio >= 0.9),
        row(f"every effect exact after each of {rounds} rounds a side",
            "; ".join(problems[:5]) or "balances, statuses, grants, skips exact", "(all exact)",
            not problems),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000, help="webhooks per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds a side (medians taken)")
    parser.add_argument("--finished", type=int, default=FINISHED_ROWS, help="finished rows")
    add_server_arguments(parser)
    args = parser.parse_args()
    load_before = os.getloadavg()
    table, meta = measure(args.events, args.rounds, shared=args.shared, port=args.port,
                          finished=args.finished)  # fmt: skip
    meta.update({"events": args.events, "rounds": args.rounds, **machine_facts(load_before)})
    print_table(table)
    print_meta(meta)
    write("mix_growth", table, meta)


if __name__ == "__main__":
    main()
