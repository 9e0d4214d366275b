"""Ingress benchmark: verified-and-committed webhooks per second against Postgres, next to a
bare endpoint on the same stack that only checks the HMAC, measured in the same run.

    .venv/bin/python -m bench.ingress [--seconds 10] [--rate 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import uuid

from sqlalchemy import create_engine, func, select, text

from bench.common import (
    free_port,
    postgres_database,
    print_table,
    python,
    server,
    settle,
    write_results,
)
from bench.loadgen import LoadResult, build_request, closed_loop, open_loop
from bench.loadgen import run as run_load
from ingress.signatures import github_signature
from outbox.models import WebhookEvent

SECRET = "bench-secret"
BODY_BYTES = 4096


def signed_requests(port: int, count: int, run: str) -> list[bytes]:
    """`count` distinct 4 KB GitHub deliveries, each with its own delivery id and signature."""
    requests = []
    for n in range(count):
        payload = {"action": "opened", "installation": {"id": 42}, "number": n, "pad": ""}
        raw = json.dumps(payload, separators=(",", ":"))
        payload["pad"] = "x" * (BODY_BYTES - len(raw))
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "X-GitHub-Event": "issues",
            "X-GitHub-Delivery": f"{run}-{n}",
            "X-Hub-Signature-256": github_signature(SECRET, body),
        }
        requests.append(build_request("127.0.0.1", port, "/webhooks/github", body, headers))
    return requests


def figures(name: str, result: LoadResult) -> dict[str, object]:
    ok = result.statuses.get(200, 0)
    return {
        "target": name,
        "answered": result.sent,
        "2xx": ok,
        "per_second": round(ok / result.elapsed) if result.elapsed else 0,
        "p50_ms": round(result.percentile(50) * 1000, 2),
        "p99_ms": round(result.percentile(99) * 1000, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each measurement")
    parser.add_argument(
        "--rate", type=float, default=1000.0, help="steady rate for the latency run"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every measurement")
    parser.add_argument("--log-level", default="INFO", help="the ingress's LOG_LEVEL")
    args = parser.parse_args()
    rows, meta = measure(args.seconds, args.rate, args.log_level, args.rounds)
    print_table(rows)
    for key, value in meta.items():
        print(f"{key}: {value}")
    write_results("ingress", rows, meta)


def measure(
    seconds: float, rate: float, log_level: str = "INFO", rounds: int = 3
) -> tuple[list[dict[str, object]], dict[str, object]]:
    """`rounds` rounds of: closed loops at 16 and 64 senders (bare endpoint, then ingress,
    back to back), then a steady rate, each started on a settled disk (bench.common.settle).
    The machine is shared and its speed moves by tens of per cent within minutes; each
    ratio pairs runs seconds apart, and the targets are read off the median round, every
    round reported."""

    rows: list[dict[str, object]] = []
    bare_port, ingress_port = free_port(), free_port()
    per_run = int(seconds * 20_000)
    with postgres_database() as url:
        env = {
            "DATABASE_URL": url,
            "GITHUB_WEBHOOK_SECRET": SECRET,
            "LOG_LEVEL": log_level,
            "BENCH_GITHUB_SECRET": SECRET,
            "REDIS_URL": "redis://127.0.0.1:1/0",
        }
        uvicorn = [python(), "-m", "uvicorn", "--log-level", "warning", "--no-access-log"]
        with (
            server([*uvicorn, "--port", str(bare_port), "bench.bare_app:app"], bare_port, env),
            server(
                [python(), "-m", "outbox", "serve", "--port", str(ingress_port)], ingress_port, env
            ),
        ):
            warm = signed_requests(ingress_port, 2000, f"warm-{uuid.uuid4().hex[:6]}")
            run_load(closed_loop("127.0.0.1", ingress_port, warm, 16, 2.0))
            run_load(closed_loop("127.0.0.1", bare_port, warm, 16, 2.0))
            for round_ in range(1, rounds + 1):
                for concurrency in (16, 64):
                    for name, port in (
                        ("bare HMAC endpoint", bare_port),
                        ("ingress (Postgres)", ingress_port),
                    ):
                        tag = f"r{round_}c{concurrency}-{uuid.uuid4().hex[:6]}"
                        reqs = signed_requests(port, per_run, tag)
                        settle()
                        result = run_load(
                            closed_loop("127.0.0.1", port, reqs, concurrency, seconds)
                        )
                        rows.append(
                            {"round": round_, "senders": concurrency, **figures(name, result)}
                        )
                reqs = signed_requests(
                    ingress_port, int(rate * seconds), f"steady{round_}-{uuid.uuid4().hex[:6]}"
                )
                settle()
                steady = run_load(open_loop("127.0.0.1", ingress_port, reqs, rate, seconds))
                rows.append(
                    {
                        "round": round_,
                        "senders": f"steady {int(rate)}/s",
                        **figures("ingress (Postgres)", steady),
                    }
                )
        engine = create_engine(url)
        with engine.connect() as conn:
            stored = conn.scalar(select(func.count()).select_from(WebhookEvent))
            version = conn.execute(text("SHOW server_version")).scalar()
        engine.dispose()
    answered_2xx = sum(int(str(r["2xx"])) for r in rows if r["target"] == "ingress (Postgres)")
    meta: dict[str, object] = {
        "cores": os.cpu_count(),
        "postgres": version,
        "body_bytes": BODY_BYTES,
        "seconds_per_run": seconds,
        "rounds": rounds,
        "ingress_log_level": log_level,
        "rows_stored_vs_2xx_answered": f"{stored} stored / {answered_2xx} answered 2xx (+ warm-up)",
    }
    for concurrency in (16, 64):
        ratios = [round_ratio(rows, round_, concurrency) for round_ in range(1, rounds + 1)]
        meta[f"ratio_{concurrency}_rounds"] = ratios
        meta[f"ratio_{concurrency}"] = statistics.median(ratios)
    steady_p99 = [float(str(r["p99_ms"])) for r in rows if str(r["senders"]).startswith("steady")]
    meta["steady_p99_ms_rounds"] = steady_p99
    meta["steady_p99_ms"] = statistics.median(steady_p99)
    return rows, meta


def round_ratio(rows: list[dict[str, object]], round_: int, concurrency: int) -> float:
    """The ingress's committed rate over the bare endpoint's, in one round."""
    ours, bare = round_rates(rows, round_, concurrency)
    return round(ours / max(1, bare), 3)


def round_rates(rows: list[dict[str, object]], round_: int, concurrency: int) -> tuple[int, int]:
    """The ingress's and the bare endpoint's rates (per second) in one round."""

    def rate(prefix: str) -> int:
        return next(
            int(str(r["per_second"]))
            for r in rows
            if r["round"] == round_
            and r["senders"] == concurrency
            and str(r["target"]).startswith(prefix)
        )

    return rate("ingress"), rate("bare")


if __name__ == "__main__":
    main()
