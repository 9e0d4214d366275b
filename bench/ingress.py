"""Ingress benchmark: verified-and-committed webhooks per second on Postgres, with the
doorbell ringing a real Redis (a private redis-server), beside two baselines on the same
server stack (uvicorn, uvloop, httptools) measured in the same round: a bare endpoint that
only checks the HMAC (bench/bare_app.py) and a naive one that stores each webhook with one
INSERT and commit (bench/naive_app.py).

    .venv/bin/python -m bench.ingress [--seconds 8] [--rate 1000] [--rounds 3] [--redisless]

Closed loops are driven by wrk (2 threads; bench/wrk_github.lua), the steady rate by the
open loop of bench/loadgen.py (latency from each request's scheduled time). Each run reads
the CPU time (user + system, /proc) of every process before and after: the server (and
its children), every `postgres` process, the redis-server, and the generator, so each
one's CPU per webhook is in the table, and the ingress's rows per batch INSERT.
`--redisless` also measures the ingress with its Redis unreachable (the doorbell failing
and resting), labelled as such.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from sqlalchemy import create_engine, func, select, text

from bench.common import (
    ROOT,
    cpu_seconds,
    free_port,
    machine_facts,
    pids_of,
    postgres_database,
    print_table,
    python,
    server,
    settle,
    write_results,
)
from bench.loadgen import build_request, open_loop
from bench.loadgen import run as run_load
from ingress.signatures import github_signature
from outbox.models import WebhookEvent
from tests.services import RedisServer

SECRET = "bench-secret"
BODY_BYTES = 4096
WRK_SCRIPT = ROOT / "bench" / "wrk_github.lua"
WRK_THREADS = 2  #: one per core of the machine the targets are set for

BARE = "bare HMAC endpoint"
NAIVE = "naive INSERT+commit"
INGRESS = "ingress, ringing Redis"
REDISLESS = "ingress, Redis unreachable"


EVENT = "issues"  #: the X-GitHub-Event of every delivery (and wrk's)
#: The ingress's handler table: bench.processing's, which applies `issues.opened`, so the
#: ingress stores every delivery pending and rings for it, as it does for any type a
#: handler applies (a type none applies is stored finished, never rung:
#: ingress/stored_only.py). No worker runs: what the handler does is never reached.
HANDLER_TABLE = "bench.processing:handler_table"


def github_body(n: int) -> bytes:
    """A 4 KB GitHub `issues.opened` delivery."""
    payload = {"action": "opened", "installation": {"id": 42}, "number": n, "pad": ""}
    raw = json.dumps(payload, separators=(",", ":"))
    payload["pad"] = "x" * (BODY_BYTES - len(raw))
    return json.dumps(payload, separators=(",", ":")).encode()


def signed_requests(port: int, count: int, run: str) -> list[bytes]:
    """`count` distinct 4 KB GitHub deliveries, each with its own delivery id and signature."""
    requests = []
    for n in range(count):
        body = github_body(n)
        headers = {
            "Content-Type": "application/json",
            "X-GitHub-Event": EVENT,
            "X-GitHub-Delivery": f"{run}-{n}",
            "X-Hub-Signature-256": github_signature(SECRET, body),
        }
        requests.append(build_request("127.0.0.1", port, "/webhooks/github", body, headers))
    return requests


@dataclass
class Target:
    name: str
    port: int
    pid: int
    redis_pid: int | None = None

    def processes(self) -> dict[str, list[int]]:
        return {
            "server": [self.pid, *pids_of("-P", str(self.pid))],
            "postgres": pids_of("-x", "postgres"),
            "redis": [self.redis_pid] if self.redis_pid else [],
        }


@dataclass
class Load:
    """What one run of a generator measured."""

    answered: int
    ok: int
    seconds: float
    p50_ms: float
    p99_ms: float
    generator_cpu: float


def wrk(port: int, connections: int, seconds: float, body: Path, run: str) -> Load:
    """A closed loop of `connections` keep-alive connections for `seconds`, by wrk."""
    env = {
        **os.environ,
        "WRK_BODY": str(body),
        "WRK_SIGNATURE": github_signature(SECRET, body.read_bytes()),
        "WRK_RUN": run,
    }
    command = ["wrk", "-t", str(WRK_THREADS), "-c", str(connections), "-d", f"{seconds:g}s"]
    command += ["-s", str(WRK_SCRIPT), f"http://127.0.0.1:{port}"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    output = proc.stdout.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    lines = {
        line.split()[0]: line.split()[1:] for line in output.splitlines() if line[:1].isupper()
    }
    if proc.returncode != 0 or "RESULT" not in lines:
        raise RuntimeError(f"wrk failed: {output[-1000:]}")
    requests, duration_us, bad_status, *_errors = (int(x) for x in lines["RESULT"])
    p50, p99, _ = (int(x) for x in lines["LATENCY"])
    return Load(
        answered=requests,
        ok=requests - bad_status,
        seconds=duration_us / 1e6,
        p50_ms=p50 / 1000,
        p99_ms=p99 / 1000,
        generator_cpu=usage.ru_utime + usage.ru_stime,
    )


def steady(port: int, rate: float, seconds: float, run: str) -> Load:
    """An open loop at `rate` per second for `seconds` (bench/loadgen.py, this process)."""
    requests = signed_requests(port, int(rate * seconds), run)
    before = time.process_time()
    result = run_load(open_loop("127.0.0.1", port, requests, rate, seconds))
    return Load(
        answered=result.sent,
        ok=result.statuses.get(200, 0),
        seconds=result.elapsed,
        p50_ms=round(result.percentile(50) * 1000, 2),
        p99_ms=round(result.percentile(99) * 1000, 2),
        generator_cpu=time.process_time() - before,
    )


def measured(target: Target, load: callable) -> dict[str, object]:  # type: ignore[valid-type]
    """Run `load` against `target` on a settled disk; its figures and each process's CPU."""
    settle()
    processes = target.processes()
    before = {name: cpu_seconds(pids) for name, pids in processes.items()}
    result: Load = load()
    after = {name: cpu_seconds(pids) for name, pids in processes.items()}
    per = max(1, result.ok)
    row: dict[str, object] = {
        "target": target.name,
        "answered": result.answered,
        "2xx": result.ok,
        "per_second": round(result.ok / result.seconds) if result.seconds else 0,
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
    }
    for name in processes:
        row[f"{name}_us"] = round((after[name] - before[name]) / per * 1e6)
    row["generator_us"] = round(result.generator_cpu / per * 1e6)
    return row


@contextmanager
def targets(url: str, log_level: str, redisless: bool) -> Iterator[list[Target]]:
    """The servers, each on a free port: bare, naive, the ingress ringing a private Redis,
    and maybe the ingress with its Redis unreachable."""
    from bench.pipeline import conninfo

    with ExitStack() as stack:
        redis = stack.enter_context(RedisServer())
        base = {
            "DATABASE_URL": url,
            "GITHUB_WEBHOOK_SECRET": SECRET,
            "LOG_LEVEL": log_level,
            "BENCH_GITHUB_SECRET": SECRET,
            "BENCH_NAIVE_DSN": conninfo(url),
            "REDIS_URL": redis.url,
            "REDIS_NAMESPACE": f"bench-{uuid.uuid4().hex[:6]}",
            "HANDLER_TABLE": HANDLER_TABLE,
        }
        uvicorn = [python(), "-m", "uvicorn", "--log-level", "warning", "--no-access-log"]
        found = []
        commands = [
            (BARE, lambda port: [*uvicorn, "--port", str(port), "bench.bare_app:app"], {}),
            (NAIVE, lambda port: [*uvicorn, "--port", str(port), "bench.naive_app:app"], {}),
            (INGRESS, lambda port: [python(), "-m", "outbox", "serve", "--port", str(port)], {}),
        ]
        if redisless:
            commands.append(
                (
                    REDISLESS,
                    lambda port: [python(), "-m", "outbox", "serve", "--port", str(port)],
                    {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"},
                )
            )
        for name, command, extra in commands:
            port = free_port()
            proc = stack.enter_context(server(command(port), port, {**base, **extra}))
            assert redis._proc is not None
            redis_pid = redis._proc.pid if name == INGRESS else None
            found.append(Target(name, port, proc.pid, redis_pid))
        yield found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each measurement")
    parser.add_argument("--rate", type=float, default=1000.0, help="steady rate, per second")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every measurement")
    parser.add_argument("--log-level", default="INFO", help="the ingress's LOG_LEVEL")
    parser.add_argument("--redisless", action="store_true", help="also the Redis-less ingress")
    args = parser.parse_args()
    rows, meta = measure(args.seconds, args.rate, args.log_level, args.rounds, args.redisless)
    print_table(rows)
    for key, value in meta.items():
        print(f"{key}: {value}")
    write_results("ingress", rows, meta)


def measure(
    seconds: float,
    rate: float,
    log_level: str = "INFO",
    rounds: int = 3,
    redisless: bool = False,
) -> tuple[list[dict[str, object]], dict[str, object]]:
    """`rounds` rounds of: wrk closed loops at 16 and 64 connections against every target,
    back to back, then the steady rate against the ingress ringing Redis; each run started
    on a settled disk (bench.common.settle). The machine is shared and its speed moves
    within minutes: each ratio pairs runs seconds apart, the targets are read off the
    median of the rounds, every round reported."""
    rows: list[dict[str, object]] = []
    load_before = os.getloadavg()
    with postgres_database() as url, tempfile.TemporaryDirectory() as tmp:
        body = Path(tmp) / "body.json"
        body.write_bytes(github_body(0))
        with targets(url, log_level, redisless) as servers:
            for target in servers:  # warm-up: imports, connections, the JIT-less caches
                wrk(target.port, 16, 2, body, f"warm-{uuid.uuid4().hex[:6]}")
            for round_ in range(1, rounds + 1):
                for connections in (16, 64):
                    for target in servers:
                        tag = f"r{round_}c{connections}-{uuid.uuid4().hex[:6]}"
                        row = measured(
                            target,
                            lambda t=target, c=connections, g=tag: wrk(t.port, c, seconds, body, g),
                        )
                        row["rows_per_batch"] = (
                            rows_per_batch(url, tag) if target.name != NAIVE else ""
                        )
                        rows.append({"round": round_, "load": f"{connections} conn.", **row})
                ingress = next(t for t in servers if t.name == INGRESS)
                tag = f"steady{round_}-{uuid.uuid4().hex[:6]}"
                row = measured(ingress, lambda p=ingress.port, g=tag: steady(p, rate, seconds, g))
                row["rows_per_batch"] = rows_per_batch(url, tag)
                rows.append({"round": round_, "load": f"steady {int(rate)}/s", **row})
        engine = create_engine(url)
        with engine.connect() as conn:
            stored = conn.scalar(select(func.count()).select_from(WebhookEvent))
            naive_stored = conn.scalar(text("SELECT count(*) FROM naive_webhooks"))
            version = conn.execute(text("SHOW server_version")).scalar()
        engine.dispose()
    answered = {
        name: sum(int(str(r["2xx"])) for r in rows if r["target"] == name)
        for name in (INGRESS, REDISLESS, NAIVE)
    }
    meta: dict[str, object] = {
        **machine_facts(load_before),
        "postgres": version,
        "body_bytes": BODY_BYTES,
        "seconds_per_run": seconds,
        "rounds": rounds,
        "generator": f"wrk -t {WRK_THREADS} (closed loops), bench.loadgen open loop (steady)",
        "ingress_log_level": log_level,
        # wrk does not count the requests in flight when it stops: those may be stored too.
        "ingress_rows_vs_2xx": f"{stored} stored / {answered[INGRESS] + answered[REDISLESS]} "
        "2xx answered after warm-up (+ warm-up rows)",
        "ingress_every_2xx_stored": bool(
            stored and stored >= answered[INGRESS] + answered[REDISLESS]
        ),
        "naive_rows_vs_2xx": f"{naive_stored} stored / {answered[NAIVE]} 2xx answered",
    }
    for connections in (16, 64):
        for baseline, key in ((BARE, "bare"), (NAIVE, "naive")):
            ratios = [
                round_ratio(rows, round_, connections, INGRESS, baseline)
                for round_ in range(1, rounds + 1)
            ]
            meta[f"ratio_to_{key}_{connections}_rounds"] = ratios
            meta[f"ratio_to_{key}_{connections}"] = statistics.median(ratios)
        p99 = [
            float(str(r["p99_ms"]))
            for r in rows
            if r["target"] == INGRESS and r["load"] == f"{connections} conn."
        ]
        meta[f"p99_ms_{connections}"] = statistics.median(p99)
    steady_p99 = [float(str(r["p99_ms"])) for r in rows if str(r["load"]).startswith("steady")]
    meta["steady_p99_ms_rounds"] = steady_p99
    meta["steady_p99_ms"] = statistics.median(steady_p99)
    return rows, meta


def rows_per_batch(url: str, run: str) -> float | str:
    """The ingress's rows per batch INSERT over one run (the rows of a batch share their
    received_at); "" for a server that stored none (the bare endpoint)."""
    from bench.pipeline import conninfo

    with psycopg.connect(conninfo(url)) as conn:
        found = conn.execute(
            "SELECT count(*), count(DISTINCT received_at) FROM webhook_events "
            "WHERE delivery_id LIKE %s",
            (f"{run}-%",),
        ).fetchone()
    assert found is not None
    rows, batches = found
    return round(rows / batches, 1) if batches else ""


def round_rate(rows: list[dict[str, object]], round_: int, connections: int, name: str) -> int:
    return next(
        int(str(r["per_second"]))
        for r in rows
        if r["round"] == round_ and r["load"] == f"{connections} conn." and r["target"] == name
    )


def round_ratio(
    rows: list[dict[str, object]], round_: int, connections: int, name: str, baseline: str
) -> float:
    """`name`'s committed rate over `baseline`'s, in one round."""
    ours, theirs = (round_rate(rows, round_, connections, n) for n in (name, baseline))
    return round(ours / max(1, theirs), 3)


if __name__ == "__main__":
    main()
