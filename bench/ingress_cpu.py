"""Where an ingress request's CPU goes: the server, the Postgres backends and the senders,
per committed webhook, over one closed loop (the figures behind the README's µs a request).

    .venv/bin/python -m bench.ingress_cpu [--senders 16] [--seconds 8] [--bare]

CPU time is read from /proc (user + system) before and after the loop, for the server
process and its children, for every `postgres` process, and for this process (the senders).
"""

from __future__ import annotations

import argparse
import time
import uuid

from bench.common import cpu_seconds, free_port, pids_of, postgres_database, python, server
from bench.ingress import HANDLER_TABLE, SECRET, signed_requests
from bench.loadgen import closed_loop
from bench.loadgen import run as run_load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--senders", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--bare", action="store_true", help="the bare HMAC endpoint instead")
    args = parser.parse_args()
    port = free_port()
    with postgres_database() as url:
        env = {
            "DATABASE_URL": url,
            "GITHUB_WEBHOOK_SECRET": SECRET,
            "BENCH_GITHUB_SECRET": SECRET,
            "REDIS_URL": "redis://127.0.0.1:1/0",
            "HANDLER_TABLE": HANDLER_TABLE,  # stored pending, as bench.ingress's deliveries
        }
        if args.bare:
            command = [python(), "-m", "uvicorn", "--log-level", "warning", "--no-access-log"]
            command += ["--port", str(port), "bench.bare_app:app"]
        else:
            command = [python(), "-m", "outbox", "serve", "--port", str(port)]
        with server(command, port, env) as proc:
            warm = signed_requests(port, 2000, f"warm-{uuid.uuid4().hex[:6]}")
            run_load(closed_loop("127.0.0.1", port, warm, args.senders, 2.0))
            requests = signed_requests(port, int(args.seconds * 25_000), uuid.uuid4().hex[:8])
            served = [proc.pid, *pids_of("-P", str(proc.pid))]
            postgres = pids_of("-x", "postgres")
            before = cpu_seconds(served), cpu_seconds(postgres), time.process_time()
            result = run_load(closed_loop("127.0.0.1", port, requests, args.senders, args.seconds))
            after = cpu_seconds(served), cpu_seconds(postgres), time.process_time()
    answered = result.statuses.get(200, 0)
    used = [b - a for a, b in zip(before, after, strict=True)]
    print(f"{'bare' if args.bare else 'ingress'}, {args.senders} senders: {answered} answered 200")
    print(f"  {answered / result.elapsed:,.0f}/s, p50 {result.percentile(50) * 1000:.2f} ms")
    for name, seconds in zip(("server", "postgres", "senders"), used, strict=True):
        print(
            f"  {name:9} {seconds / result.elapsed:.2f} cores, "
            f"{seconds / max(1, answered) * 1e6:.0f} µs per request"
        )


if __name__ == "__main__":
    main()
