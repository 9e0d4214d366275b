"""What the benchmarks share: a private Postgres database (on the shared server or on a
private cluster started with production's settings), server subprocesses, result files."""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
POSTGRES_ADMIN = os.environ.get(
    "OUTBOX_BENCH_POSTGRES", "host=127.0.0.1 port=5432 user=postgres dbname=test"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def postgres_database(prefix: str = "outbox_bench", admin: str = POSTGRES_ADMIN) -> Iterator[str]:
    """A migrated private database on the server `admin` connects to, dropped afterwards."""
    from outbox.migrate import upgrade

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    params = psycopg.conninfo.conninfo_to_dict(admin)
    url = (
        f"postgresql+psycopg://{params['user']}@{params['host']}:{params.get('port', 5432)}/{name}"
    )
    try:
        upgrade(url)
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


#: The settings a production server runs with that this machine's shared server does not
#: (its autovacuum is off): a private cluster started with these measures what a deployment
#: sees. shared_buffers is copied from the shared server, so memory is not what differs.
PRODUCTION_SETTINGS = {
    "autovacuum": "on",
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "shared_preload_libraries": "pg_stat_statements",
    "pg_stat_statements.track": "top",
}


def shared_setting(name: str) -> str:
    """A setting of the shared server (SHOW), e.g. its shared_buffers."""
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as conn:
        row = conn.execute(f"SHOW {name}").fetchone()
    assert row is not None
    return str(row[0])


def _postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not found:
        raise RuntimeError("no PostgreSQL binaries under /usr/lib/postgresql/*/bin")
    return Path(found[-1]).parent


def _as_postgres(args: list[str]) -> None:
    """Run a PostgreSQL binary as the `postgres` OS user (it refuses to run as root)."""
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run([*prefix, *args], check=True, capture_output=True)


@contextmanager
def private_postgres(
    port: int, settings: dict[str, str] | None = None, log_to: Path | None = None
) -> Iterator[str]:
    """A PostgreSQL cluster of its own on `port` (initdb into a temporary directory on the
    same disk as the shared server's), with PRODUCTION_SETTINGS, the shared server's
    shared_buffers and `settings`; stopped and removed afterwards (its server log copied to
    `log_to` first, if given), also when the run fails, is interrupted (Ctrl-C) or is sent
    SIGTERM. Yields its admin conninfo."""
    pg_bin = _postgres_bin()
    home = Path(tempfile.mkdtemp(prefix="outbox-bench-pg-"))
    data = home / "data"
    if os.geteuid() == 0:
        shutil.chown(home, "postgres", "postgres")
    settings = {**PRODUCTION_SETTINGS, "shared_buffers": shared_setting("shared_buffers"),
                "listen_addresses": "127.0.0.1", "unix_socket_directories": str(home),
                **(settings or {})}  # fmt: skip
    options = f"-p {port} " + " ".join(f"-c {k}={v}" for k, v in settings.items())
    try:
        with _sigterm_as_exit():
            _as_postgres([str(pg_bin / "initdb"), "-D", str(data), "-A", "trust", "-U",
                          "postgres", "-E", "UTF8", "--no-instructions"])  # fmt: skip
            _as_postgres([str(pg_bin / "pg_ctl"), "-D", str(data), "-o", options,
                          "-l", str(home / "log"), "-w", "-t", "60", "start"])  # fmt: skip
            yield f"host=127.0.0.1 port={port} user=postgres dbname=postgres"
    finally:
        _stop_cluster(pg_bin, data)
        if log_to is not None and (home / "log").exists():
            shutil.copyfile(home / "log", log_to)
        shutil.rmtree(home, ignore_errors=True)


@contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """SIGTERM raises SystemExit (as Ctrl-C raises KeyboardInterrupt), so that the cleanup
    of what is running unwinds; only the main thread can take signals."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def leave(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, leave)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop_cluster(pg_bin: Path, data: Path) -> None:
    """Stop the cluster in `data` if a postmaster runs there (a start interrupted half-way
    leaves one too), with Ctrl-C and SIGTERM held back until it is down: a second Ctrl-C
    must not leave it running. An immediate stop if the fast one fails."""
    if not (data / "postmaster.pid").exists():
        return
    held = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        for mode in ("fast", "immediate"):
            with suppress(subprocess.CalledProcessError):
                _as_postgres([str(pg_bin / "pg_ctl"), "-D", str(data), "-m", mode, "-w",
                              "-t", "60", "stop"])  # fmt: skip
                return
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, held)


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """--shared and --port: where a benchmark that measures the database runs (postgres)."""
    parser.add_argument(
        "--shared", action="store_true",
        help="on the shared server at 127.0.0.1:5432 (autovacuum off on this machine) instead "
        "of a private cluster with production's settings",
    )  # fmt: skip
    parser.add_argument("--port", type=int, help="private cluster's port (default: a free one)")


@contextmanager
def postgres(shared: bool = False, port: int | None = None) -> Iterator[str]:
    """The admin conninfo of the server a benchmark measures on: by default a private cluster
    with production's settings (private_postgres) on `port` or a free one, stopped
    afterwards; `shared`: the shared server."""
    if shared:
        yield POSTGRES_ADMIN
        return
    with private_postgres(port or free_port()) as admin:
        yield admin


def describe_server(admin: str) -> str:
    """What a figure was measured on: the server's address and the settings that matter."""
    names = ("autovacuum", "fsync", "synchronous_commit", "shared_buffers", "server_version")
    with psycopg.connect(admin, autocommit=True) as conn:
        shown = {name: conn.execute(f"SHOW {name}").fetchone()[0] for name in names}  # type: ignore[index]
    params = psycopg.conninfo.conninfo_to_dict(admin)
    kind = "shared server" if admin == POSTGRES_ADMIN else "private cluster"
    return (f"{kind} {params.get('host')}:{params.get('port', 5432)}, PostgreSQL "
            f"{shown['server_version'].split()[0]}, autovacuum {shown['autovacuum']}, fsync "
            f"{shown['fsync']}, synchronous_commit {shown['synchronous_commit']}, "
            f"shared_buffers {shown['shared_buffers']}")  # fmt: skip


#: Statements shown per database from pg_stat_statements.
TOP_STATEMENTS = 8


def reset_statements(admin: str) -> None:
    """Start pg_stat_statements' counts afresh (a private cluster loads it)."""
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        conn.execute("SELECT pg_stat_statements_reset()")


def top_statements(admin: str, url: str, drained: int) -> dict[str, Any]:
    """The statements that took the most server time in database `url` since the last
    reset: calls, ms in all, µs per row drained, blocks read from outside shared_buffers."""
    name = url.rsplit("/", 1)[1]
    where = "FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = %s"
    with psycopg.connect(admin, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT s.calls, s.total_exec_time, s.shared_blks_hit, s.shared_blks_read, "
            f"left(regexp_replace(s.query, '\\s+', ' ', 'g'), 110) {where} "
            "ORDER BY s.total_exec_time DESC LIMIT %s",
            (name, TOP_STATEMENTS),
        ).fetchall()
        total = conn.execute(f"SELECT coalesce(sum(total_exec_time), 0) {where}", (name,))
        total_ms = float(total.fetchone()[0])  # type: ignore[index]
    per_row = 1000 / max(1, drained)
    return {
        "server ms in all": round(total_ms),
        "top": [
            f"{calls} calls, {ms:,.0f} ms ({ms * per_row:.1f} µs/row), "
            f"{hit + read:,} blocks ({read:,} read): {query}"
            for calls, ms, hit, read, query in rows
        ],
    }


def print_meta(meta: dict[str, Any]) -> None:
    """A run's facts, and its statements (name -> top_statements) one a line."""
    for key, value in meta.items():
        if key == "statements":
            for name, figures in value.items():
                print(f"statements, {name}: server {figures['server ms in all']:,} ms in all")
                for line in figures["top"]:
                    print(f"  {line}")
        else:
            print(f"{key}: {value}")


def settle(admin: str = POSTGRES_ADMIN) -> None:
    """Write out what earlier measurements left dirty (Postgres's buffers, the page cache).

    The shared machine's disk flushed a closed loop's gigabyte for tens of seconds after
    it; a measurement started meanwhile timed that flush: commits waited on WAL syncs
    behind it (the ingress's own histogram showed the 100-250 ms answers). Settled first,
    a steady run after a 64-sender loop measured p99 8-19 ms instead of 10-209 ms.
    """
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
    os.sync()


@contextmanager
def server(
    args: list[str], port: int, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A server subprocess, waited for until its port answers, stopped afterwards.

    Its output goes to a file: a pipe nobody reads fills up and freezes a chatty server.
    """
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            args, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            _wait_for_port(proc, port, log)
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def _wait_for_port(proc: subprocess.Popen[bytes], port: int, log: Any) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                err = log.read().decode(errors="replace")
                raise RuntimeError(f"server did not start: {err[-2000:]}") from None
            time.sleep(0.1)


def python() -> str:
    return sys.executable


def machine_facts(load_before: tuple[float, float, float]) -> dict[str, Any]:
    """What a figure stands with: the cores, the load average before (given) and after the
    run (now), and when it ended."""
    from datetime import UTC, datetime

    return {
        "cores": os.cpu_count(),
        "load_average_before": " ".join(f"{x:.1f}" for x in load_before),
        "load_average_after": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def write_results(name: str, rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    """The figures as JSON and as a Markdown table in bench/results/."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    headers = list(rows[0]) if rows else []
    lines = [f"# {name}", "", *(f"- {k}: {v}" for k, v in meta.items()), ""]
    lines += ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(r[h]) for h in headers) + " |" for r in rows]
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")


def print_table(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    headers = list(rows[0])
    widths = [max(len(h), *(len(str(r[h])) for r in rows)) for h in headers]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    for r in rows:
        print("  ".join(str(r[h]).ljust(w) for h, w in zip(headers, widths, strict=True)))


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes so far (ended ones count nothing)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # a process that ended meanwhile
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def pids_of(*pgrep_args: str) -> list[int]:
    """The pids `pgrep` finds for these arguments."""
    found = subprocess.run(["pgrep", *pgrep_args], capture_output=True, text=True).stdout
    return [int(pid) for pid in found.split()]
