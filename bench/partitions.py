"""The outbox at tens of millions of rows: two databases on one private cluster, one empty
and one holding `--rows` finished rows over daily partitions in the past, measured in
one run.

    .venv/bin/python -m bench.partitions [--rows 20000000] [--purge-rows 10000000]
        [--days 60] [--events 20000] [--ingress-events 20000] [--rounds 3] [--runs 7]

1. Both databases are made alike (bench/mix_growth.py's prepare: the seed catalog, 500
   installations applied); the full one is filled (bench/partition_fill.py: one
   generate_series statement a day, small bodies, the delivery index too; then VACUUM
   ANALYZE), and its size on disk per million rows is reported.
2. reads at full size (bench/operator_reads.py): `outbox events stats`, `events list` with
   filters and `events show`, each timed as the whole command and as the read inside it
   (the target's figure: the read, without Python's start-up), with each statement's plan.
3. the mix (bench/mix.py's rounds: webhooks of many types through the ingress, drained by
   `outbox worker -p 2` with `outbox sweep`, every effect checked) on each database in
   turn, which goes first alternating; target: full / empty >= 0.9x (medians).
4. the ingress: `--ingress-events` webhooks of the mix (GitHub and Stripe, signed as they
   sign, several types; the ingress rings a private redis-server) sent by 16 senders to
   `outbox serve`, on each database in turn; target: full / empty >= 0.9x (medians).
5. `outbox purge --older-than` (the command on this checkout, as a process) of the oldest
   `--purge-rows` rows of the full database, while `outbox serve` takes a steady
   1,000 webhooks/s (bench/ingress.py's deliveries, bench/loadgen.py's open loop);
   targets: the purge under 10 s, the ingress's p99 while it runs under 50 ms.

On a private PostgreSQL cluster with production's settings (bench.common.private_postgres),
stopped afterwards. Writes bench/results/partitions.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from bench import ingress, mix, mix_growth, mix_workload, operator_reads
from bench.common import (
    describe_server,
    machine_facts,
    postgres,
    postgres_database,
    print_meta,
    print_table,
    python,
    settle,
    write_results,
)
from bench.loadgen import closed_loop, open_loop
from bench.loadgen import run as run_load
from bench.partition_fill import Filled, fill, partition_days
from bench.pipeline import conninfo
from tests.services import OutboxProcess, RedisServer, free_port, outbox_env

PURGE_TARGET_SECONDS = 10.0
STREAM_P99_TARGET_MS = 50.0
STREAM_RATE = 1000.0  #: webhooks per second of the steady stream beside the purge
PURGE_AFTER = 3.0  #: seconds of the stream before the purge starts
INGRESS_WARMUP = 500  #: webhooks sent before each timed ingress run (statements prepared)


def row(benchmark: str, measure: str, figure: str, target: str, passed: Any) -> dict[str, Any]:
    return {"benchmark": benchmark, "measure": measure, "figure": figure, "target": target,
            "pass": passed}  # fmt: skip


# --- the ingress, full against empty --------------------------------------------------------


def ingress_rate(url: str, events: int, run: str) -> float:
    """Webhooks of the mix answered 200 per second by `outbox serve` on `url`, 16 senders."""
    workload = mix_workload.Workload(
        run, mix_workload.Expected(), seed_value=zlib.crc32(run.encode())
    )
    requests = workload.mix(events + INGRESS_WARMUP)
    with mix.ingress(url) as port:
        signed = [r.signed(port) for r in requests]
        run_load(closed_loop("127.0.0.1", port, signed[:INGRESS_WARMUP], mix.SENDERS, 600.0))
        result = run_load(
            closed_loop("127.0.0.1", port, signed[INGRESS_WARMUP:], mix.SENDERS, 600.0)
        )
    ok = result.statuses.get(200, 0)
    if ok != events:
        raise RuntimeError(f"ingress: {events - ok} of {events} webhooks not answered 200")
    return ok / result.elapsed


def paired_rates(
    urls: dict[str, str], rounds: int, measure: Any, admin: str
) -> dict[str, list[float]]:
    """`measure(url, run)` on each side in each round, which goes first alternating."""
    rates: dict[str, list[float]] = {"empty": [], "full": []}
    for round_ in range(rounds):
        for side in ("empty", "full") if round_ % 2 == 0 else ("full", "empty"):
            settle(admin)
            rates[side].append(measure(urls[side], f"p{round_}{side[0]}{uuid.uuid4().hex[:4]}"))
    return rates


def ratio_rows(name: str, rates: dict[str, list[float]], rows: int) -> list[dict[str, Any]]:
    median = {side: statistics.median(values) for side, values in rates.items()}
    pairs = [f / e for e, f in zip(rates["empty"], rates["full"], strict=True)]
    ratio = median["full"] / median["empty"]
    shown = {side: ", ".join(f"{v:,.0f}" for v in values) for side, values in rates.items()}
    return [
        row(name, "empty table", f"median {median['empty']:,.0f}/s of {shown['empty']}",
            "(baseline)", ""),
        row(name, f"{rows:,} finished rows", f"median {median['full']:,.0f}/s of {shown['full']}",
            "(measured)", ""),
        row(name, "full / empty", f"{ratio:.2f}x (pairs {', '.join(f'{p:.2f}x' for p in pairs)})",
            ">= 0.9x", ratio >= 0.9),
    ]  # fmt: skip


# --- the purge under a steady stream ---------------------------------------------------------


def bodies_before(conn_info: str, cutoff: datetime) -> int:
    """Rows received before `cutoff` that still have their body (a purge by partition
    removes the rows, the batched purge of one table the bodies)."""
    with psycopg.connect(conn_info) as conn:
        found = conn.execute(
            "SELECT count(*) FROM webhook_events WHERE received_at < %s AND raw_body IS NOT NULL",
            (cutoff,),
        ).fetchone()
    return int(found[0]) if found else 0


def purge_under_stream(
    url: str, admin: str, older_than_days: int, stream_seconds: float, timeout: float
) -> dict[str, Any]:
    """`outbox purge --older-than {older_than_days}d --yes` started PURGE_AFTER seconds into
    a steady STREAM_RATE/s of signed deliveries to `outbox serve` on the same database."""
    cutoff = datetime.now(UTC) - timedelta(days=older_than_days)
    before = bodies_before(conninfo(url), cutoff)
    purge: dict[str, Any] = {}
    with RedisServer() as redis:
        env = outbox_env(url, redis_url=redis.url, github_webhook_secret=ingress.SECRET,
                         handler_table=ingress.HANDLER_TABLE, log_level="WARNING")  # fmt: skip
        port = free_port()
        with OutboxProcess(["serve", "--port", str(port)], env, port=port):
            warm = ingress.signed_requests(port, 500, "warm" + uuid.uuid4().hex[:6])
            run_load(open_loop("127.0.0.1", port, warm, STREAM_RATE, 0.5))
            run = "purge" + uuid.uuid4().hex[:6]
            requests = ingress.signed_requests(port, int(STREAM_RATE * stream_seconds), run)
            settle(admin)
            command = [python(), "-m", "outbox", "purge", "--older-than", f"{older_than_days}d",
                       "--yes", "--json"]  # fmt: skip

            def purge_now() -> None:
                purge["start"] = time.perf_counter()
                try:
                    ran = subprocess.run(command, env={**os.environ, **env}, capture_output=True,
                                         timeout=timeout)  # fmt: skip
                    purge["code"], purge["output"] = ran.returncode, ran.stdout.decode()[-400:]
                    purge["error"] = ran.stderr.decode()[-400:]
                except subprocess.TimeoutExpired:
                    purge["code"], purge["output"] = None, f"did not finish in {timeout:.0f} s"
                purge["end"] = time.perf_counter()

            timer = threading.Timer(PURGE_AFTER, purge_now)
            timer.start()
            result = run_load(open_loop("127.0.0.1", port, requests, STREAM_RATE, stream_seconds))
            timer.join()
    after = bodies_before(conninfo(url), cutoff)
    during = result.percentile_between(99, purge["start"], purge["end"])
    return {
        "seconds": purge["end"] - purge["start"],
        "code": purge["code"],
        "output": " ".join(str(purge.get("output", "")).split())[:300],
        "error": " ".join(str(purge.get("error", "")).split())[:300],
        "removed": before - after,
        "before": before,
        "sent": result.sent,
        "ok": result.statuses.get(200, 0),
        "p99_during_ms": during * 1000,
        "p99_ms": result.percentile(99) * 1000,
        "p50_ms": result.percentile(50) * 1000,
    }


def purge_rows(figures: dict[str, Any], stream_seconds: float) -> list[dict[str, Any]]:
    finished = figures["code"] == 0
    seconds = figures["seconds"]
    return [
        row("purge", f"outbox purge --older-than: {figures['removed']:,} of "
            f"{figures['before']:,} older rows (with their bodies) gone (exit {figures['code']}; "
            f"{figures['output'] or figures['error']})",
            f"{seconds:.1f} s", f"< {PURGE_TARGET_SECONDS:.0f} s",
            finished and seconds < PURGE_TARGET_SECONDS),
        row("purge", f"ingress at a steady {STREAM_RATE:,.0f}/s for {stream_seconds:.0f} s, "
            f"the purge from {PURGE_AFTER:.0f} s ({figures['ok']:,}/{figures['sent']:,} 2xx)",
            f"p99 {figures['p99_during_ms']:.1f} ms while the purge ran (whole stream: p50 "
            f"{figures['p50_ms']:.1f}, p99 {figures['p99_ms']:.1f} ms)",
            f"p99 < {STREAM_P99_TARGET_MS:.0f} ms",
            figures["p99_during_ms"] < STREAM_P99_TARGET_MS
            and figures["ok"] == figures["sent"]),
    ]  # fmt: skip


# --- the run -----------------------------------------------------------------------------


def measure(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every step on one private cluster; a step that fails is a row saying so, and the
    steps after it still run."""
    table: list[dict[str, Any]] = []
    meta: dict[str, Any] = {}
    with (
        postgres(False, args.port) as admin,
        postgres_database("outbox_bench_pempty", admin) as empty,
        postgres_database("outbox_bench_pfull", admin) as full,
    ):
        urls = {"empty": empty, "full": full}
        for url in urls.values():  # alike: the days' partitions, no legacy partition
            partition_days(conninfo(url), args.days)
        expected = attempted(table, "mix", lambda: {side: mix_growth.prepare(url, 0)
                                                    for side, url in urls.items()})  # fmt: skip
        filled = fill(conninfo(full), args.rows, args.days)
        table.append(fill_row(filled))
        meta.update({"server": describe_server(admin), "size": filled.size_per_million(),
                     "fill": f"{filled.rows:,} rows over {filled.days} days in "
                             f"{filled.seconds:.0f} s (partitioned: {filled.partitioned}, "
                             f"delivery index: {filled.delivery_index})"})  # fmt: skip
        reads = attempted(table, "reads", lambda: operator_reads.measure(
            full, conninfo(full), read_env(full), args.runs))  # fmt: skip
        table += [read_row(r) for r in reads or []]
        if expected is not None:
            expected["full"].skipped += filled.skipped
            meta["mix_rates"] = attempted(table, "mix", lambda: mix_round_trip(
                urls, args, expected, filled.rows, table, admin))  # fmt: skip
        meta["ingress_rates"] = attempted(table, "ingress", lambda: ingress_round_trip(
            urls, args, filled.rows, table, admin))  # fmt: skip
        per_day = filled.rows // filled.days
        purge_days = max(1, round(args.purge_rows / max(1, per_day)))
        older_than = filled.days - purge_days
        meta["purge"] = attempted(table, "purge", lambda: purge_under_stream(
            full, admin, older_than, args.stream_seconds, args.purge_timeout))  # fmt: skip
        if meta["purge"] is not None:
            table += purge_rows(meta["purge"], args.stream_seconds)
        meta["reads"] = reads
    return table, meta


def attempted(table: list[dict[str, Any]], name: str, step: Any) -> Any:
    """What `step()` returns; None, with a row in `table` saying why, if it failed."""
    try:
        return step()
    except Exception as exc:
        table.append(row(name, "did not complete", f"{type(exc).__name__}: {str(exc)[:300]}",
                         "", False))  # fmt: skip
        return None


def mix_round_trip(
    urls: dict[str, str], args: argparse.Namespace, expected: dict[str, mix_workload.Expected],
    rows: int, table: list[dict[str, Any]], admin: str,
) -> dict[str, list[float]]:  # fmt: skip
    """The mix's rounds on each side, their rows in `table`; the rates."""
    rates = paired_rates(
        urls, args.rounds,
        lambda url, run: mix.one_round(url, "mix", run, args.events,
                                       expected["full" if url == urls["full"] else "empty"]),
        admin,
    )  # fmt: skip
    problems = [f"{s}: {p}" for s, u in urls.items() for p in mix_growth.check(u, expected[s])]
    table += ratio_rows(f"mix, {args.events:,} a round", rates, rows)
    table.append(row("mix", "every effect exact", "; ".join(problems[:3]) or "exact",
                     "(all exact)", not problems))  # fmt: skip
    return rates


def ingress_round_trip(
    urls: dict[str, str], args: argparse.Namespace, rows: int, table: list[dict[str, Any]],
    admin: str,
) -> dict[str, list[float]]:  # fmt: skip
    """The ingress's rounds on each side, their rows in `table`; the rates."""
    rates = paired_rates(
        urls, args.rounds, lambda url, run: ingress_rate(url, args.ingress_events, run), admin
    )
    table += ratio_rows(f"ingress, {args.ingress_events:,} a round", rates, rows)
    return rates


def fill_row(filled: Filled) -> dict[str, Any]:
    layout = "daily partitions" if filled.partitioned else "one table (not partitioned)"
    return row("fill", f"{filled.rows:,} finished rows, {filled.days} days, {layout}",
               f"{filled.seconds:.0f} s; {filled.size_per_million()}", "(setup)", "")  # fmt: skip


def read_row(read: dict[str, Any]) -> dict[str, Any]:
    return row("reads", read["read"],
               f"read {read['read_ms']} ms (command {read['command_ms']} ms, server "
               f"{read['server_ms']} ms): {read['plan']}",
               f"read < {operator_reads.TARGET_MS:.0f} ms"
               + ("" if read["bounded"] else ", no Seq Scan"), read["pass"])  # fmt: skip


def read_env(url: str) -> dict[str, str]:
    """What `outbox events …` needs to run against `url` (show reads the whole settings)."""
    return outbox_env(url, redis_url="redis://127.0.0.1:1/0", log_level="WARNING",
                      github_webhook_secret=mix_workload.GITHUB_SECRET)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=20_000_000, help="finished rows to fill")
    parser.add_argument("--purge-rows", type=int, default=10_000_000,
                        help="rows of the oldest partitions the purge removes")  # fmt: skip
    parser.add_argument("--days", type=int, default=60, help="days the rows are spread over")
    parser.add_argument("--events", type=int, default=20_000, help="webhooks of a mix round")
    parser.add_argument("--ingress-events", type=int, default=20_000,
                        help="webhooks of an ingress round")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=3, help="rounds a side (medians)")
    parser.add_argument("--runs", type=int, default=7, help="runs of each read (median)")
    parser.add_argument("--stream-seconds", type=float, default=20.0,
                        help="length of the steady stream beside the purge")  # fmt: skip
    parser.add_argument("--purge-timeout", type=float, default=300.0,
                        help="seconds the purge may take before it is stopped")  # fmt: skip
    parser.add_argument("--port", type=int, help="private cluster's port (default: a free one)")
    args = parser.parse_args()
    load_before = os.getloadavg()
    started = time.time()
    table, meta = measure(args)
    meta.update({"command": "python -m bench.partitions " + " ".join(sys.argv[1:]),
                 "minutes": round((time.time() - started) / 60, 1),
                 **machine_facts(load_before)})  # fmt: skip
    for key in ("mix_rates", "ingress_rates", "reads"):
        meta[key] = json.dumps(meta.get(key))
    print_table(table)
    print_meta(meta)
    write_results("partitions", table, meta)


if __name__ == "__main__":
    main()
