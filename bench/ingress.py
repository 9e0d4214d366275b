"""Ingress benchmark: verified-and-committed webhooks per second against Postgres, next to a
bare endpoint on the same stack that only checks the HMAC, measured in the same run.

    .venv/bin/python -m bench.ingress [--seconds 10] [--rate 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import uuid

from sqlalchemy import create_engine, func, select, text

from bench.common import free_port, postgres_database, print_table, python, server, write_results
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
    parser.add_argument("--log-level", default="INFO", help="the ingress's LOG_LEVEL")
    args = parser.parse_args()
    rows, meta = measure(args.seconds, args.rate, args.log_level)
    print_table(rows)
    for key, value in meta.items():
        print(f"{key}: {value}")
    write_results("ingress", rows, meta)


def measure(
    seconds: float, rate: float, log_level: str = "INFO"
) -> tuple[list[dict[str, object]], dict[str, object]]:
    """Closed loops at 16 and 64 senders (bare endpoint, then ingress), then a steady rate."""

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
            for concurrency in (16, 64):
                for name, port in (
                    ("bare HMAC endpoint", bare_port),
                    ("ingress (Postgres)", ingress_port),
                ):
                    reqs = signed_requests(port, per_run, f"c{concurrency}-{uuid.uuid4().hex[:6]}")
                    result = run_load(closed_loop("127.0.0.1", port, reqs, concurrency, seconds))
                    rows.append({"senders": concurrency, **figures(name, result)})
            reqs = signed_requests(
                ingress_port, int(rate * seconds), f"steady-{uuid.uuid4().hex[:6]}"
            )
            steady = run_load(open_loop("127.0.0.1", ingress_port, reqs, rate, seconds))
            rows.append(
                {"senders": f"steady {int(rate)}/s", **figures("ingress (Postgres)", steady)}
            )
        engine = create_engine(url)
        with engine.connect() as conn:
            stored = conn.scalar(select(func.count()).select_from(WebhookEvent))
            version = conn.execute(text("SHOW server_version")).scalar()
        engine.dispose()
    answered_2xx = sum(int(r["2xx"]) for r in rows if r["target"] == "ingress (Postgres)")
    ratios = {}
    for concurrency in (16, 64):
        bare = next(
            r for r in rows if r["senders"] == concurrency and r["target"].startswith("bare")
        )
        ours = next(
            r for r in rows if r["senders"] == concurrency and r["target"].startswith("ingress")
        )
        ratios[f"ratio_{concurrency}"] = round(
            int(ours["per_second"]) / max(1, int(bare["per_second"])), 3
        )
    meta = {
        "cores": os.cpu_count(),
        "postgres": version,
        "body_bytes": BODY_BYTES,
        "seconds_per_run": seconds,
        "ingress_log_level": log_level,
        "rows_stored_vs_2xx_answered": f"{stored} stored / {answered_2xx} answered 2xx (+ warm-up)",
        **ratios,
    }
    return rows, meta


if __name__ == "__main__":
    main()
