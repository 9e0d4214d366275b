"""How long the operators' reads take on a large table (bench/partitions.py): `outbox events
stats`, `events list` with filters and `events show`, each timed two ways, and the plan of
every statement it sends.

- command: the whole `outbox events …` process as an operator runs it (Python's start-up,
  imports, settings, connecting, the statements, the output), wall clock;
- read: what the command does once started, in this process: a connection opened by the
  command's own driver (outbox/driver/dbapi.py), the same outbox/queries.py call, closed;
- plan: each statement the read sends, run again under EXPLAIN (ANALYZE, BUFFERS): the scans
  it chose (a Seq Scan of webhook_events or one of its partitions is flagged) and the
  server's execution time.

Each figure is the median of `runs` runs after one warm-up run.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from outbox import queries
from outbox.driver.dbapi import Connection, connect
from outbox.queries import EventFilter

TARGET_MS = 200.0  #: the answer time of the target, for the reads (not the process start)
TIMEOUT = 30.0  #: seconds a read may take before the driver gives up


@dataclass(frozen=True)
class Read:
    """One operator read: the command's arguments and the same read in this process."""

    name: str
    argv: list[str]
    call: Callable[[Connection], Any]
    #: A filter no index serves: the walk reads partitions until its budget has passed
    #: (outbox/partition_walk.py), sequentially, and says how far back it looked.
    bounded: bool = False


def reads(conninfo: str, today: datetime) -> list[Read]:
    """The reads measured, with ids and delivery ids taken from the filled rows."""
    with psycopg.connect(conninfo) as conn:
        middle = today - timedelta(days=20)
        found = conn.execute(
            "SELECT id, delivery_id FROM webhook_events WHERE source = 'github'"
            " AND received_at >= %s ORDER BY received_at LIMIT 1",
            (middle,),
        ).fetchone()
        stripe = conn.execute(
            "SELECT delivery_id FROM webhook_events WHERE source = 'stripe'"
            " AND received_at >= %s ORDER BY received_at LIMIT 1",
            (middle - timedelta(days=5),),
        ).fetchone()
    assert found is not None and stripe is not None
    event_id, github_delivery = found
    since, until = today - timedelta(days=8), today - timedelta(days=7)
    window = ["--since", since.isoformat(), "--until", until.isoformat()]

    def listing(**where: Any) -> Callable[[Connection], Any]:
        return lambda db: queries.list_page(db, EventFilter(**where), limit=50)

    return [
        Read("events stats", ["stats"], lambda db: queries.event_stats(db, now=_now())),
        Read("events list", ["list"], listing()),
        Read("events list --status dead", ["list", "--status", "dead"],
             listing(statuses=("dead",))),
        Read("events list --status pending", ["list", "--status", "pending"],
             listing(statuses=("pending",))),
        Read("events list --source stripe --type 'invoice.*'",
             ["list", "--source", "stripe", "--type", "invoice.*"],
             listing(sources=("stripe",), event_type="invoice.*")),
        Read("events list --account 42", ["list", "--account", "42"], listing(account_id=42)),
        Read("events list --type push, one day a week ago", ["list", "--type", "push", *window],
             listing(event_type="push", since=since, until=until)),
        Read("events list --delivery (a Stripe event id)", ["list", "--delivery", stripe[0]],
             listing(delivery_id=stripe[0])),
        Read("events list --type (a type no row has)", ["list", "--type", "no.such.type"],
             listing(event_type="no.such.type"), bounded=True),
        Read("events show (an id)", ["show", str(event_id)],
             lambda db: queries.find_event(db, str(event_id))),
        Read("events show (a GitHub delivery id)", ["show", github_delivery],
             lambda db: queries.find_event(db, github_delivery)),
    ]  # fmt: skip


def _now() -> datetime:
    return datetime.now(UTC)


def measure(url: str, conninfo: str, env: dict[str, str], runs: int) -> list[dict[str, Any]]:
    """Each read's figures: command and read medians (ms), the plan's scans and time."""
    rows = []
    for read in reads(conninfo, datetime.now(UTC).replace(hour=0, minute=0, second=0,
                                                           microsecond=0)):  # fmt: skip
        command = _median_ms(lambda r=read: _run_command(r.argv, env), runs)
        in_process = _median_ms(lambda r=read: _run_read(url, r.call), runs)
        scans, server_ms, seq_scans = plans(url, conninfo, read.call)
        rows.append({
            "read": read.name,
            "bounded": read.bounded,
            "read_ms": round(in_process, 1),
            "command_ms": round(command, 1),
            "server_ms": round(server_ms, 1),
            "plan": scans,
            "pass": in_process < TARGET_MS and (read.bounded or not seq_scans),
        })  # fmt: skip
    return rows


def _median_ms(run: Callable[[], object], runs: int) -> float:
    seconds = []
    for n in range(runs + 1):
        started = time.perf_counter()
        run()
        if n:  # the first run warms the caches (the server's, the files')
            seconds.append(time.perf_counter() - started)
    return statistics.median(seconds) * 1000


def _run_command(argv: list[str], env: dict[str, str]) -> None:
    command = [sys.executable, "-m", "outbox", "events", *argv]
    ran = subprocess.run(command, env={**os.environ, **env}, capture_output=True, timeout=120)
    if ran.returncode not in (0, 1):  # 1: nothing matched, which a filter may say
        raise RuntimeError(f"{' '.join(argv)} failed: {ran.stderr.decode()[-500:]}")


def _run_read(url: str, call: Callable[[Connection], Any]) -> None:
    with connect(url, timeout=TIMEOUT) as db:
        call(db)


class _Recording:
    """A DBAPI connection that keeps each statement its cursors are given."""

    def __init__(self, dbapi: Any) -> None:
        self.dbapi = dbapi
        self.sent: list[tuple[str, Any]] = []

    def cursor(self) -> Any:
        return _RecordingCursor(self.dbapi.cursor(), self.sent)


class _RecordingCursor:
    def __init__(self, cursor: Any, sent: list[tuple[str, Any]]) -> None:
        self._cursor = cursor
        self._sent = sent

    def execute(self, statement: str, params: Any = None) -> Any:
        self._sent.append((statement, params))
        return self._cursor.execute(statement, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


#: A sequential scan of a table of webhook_events that read more rows than this is flagged
#: (an empty partition's, or the default partition's few rows, are not).
SEQ_SCAN_ROWS = 1000


def plans(url: str, conninfo: str, call: Callable[[Connection], Any]) -> tuple[str, float, bool]:
    """The scans of the statements `call` sends (catalog reads left out), grouped by kind
    and index with partition names folded (`webhook_events_p*`); the server's planning and
    execution time summed; whether any read more than SEQ_SCAN_ROWS rows of webhook_events
    (or of a partition) sequentially."""
    with connect(url, timeout=TIMEOUT) as db:
        recording = _Recording(db.dbapi)
        call(Connection(recording, db.dialect))
    scans: Counter[str] = Counter()
    server_ms = 0.0
    seq = False
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for statement, params in recording.sent:
            if "pg_class" in statement or "pg_inherits" in statement:
                continue
            found = conn.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement, params)
            [[plan]] = found.fetchall()[0]
            server_ms += plan["Planning Time"] + plan["Execution Time"]
            for node in _nodes(plan["Plan"]):
                kind = node["Node Type"]
                if "Scan" not in kind or kind in ("Bitmap Heap Scan", "Subquery Scan"):
                    continue
                target = re.sub(r"_p\d{8}(T\d\d)?", "_p*", node.get("Index Name")
                                or node.get("Relation Name", "?"))  # fmt: skip
                scans[f"{kind} {target}"] += 1
                read = (node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0)) * (
                    node.get("Actual Loops", 1)
                )
                if kind.endswith("Seq Scan") and target.startswith("webhook_events"):
                    seq |= read > SEQ_SCAN_ROWS
    shown = "; ".join(f"{name} x{count}" for name, count in scans.most_common())
    return shown or "(no scan)", server_ms, seq


def _nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(n for child in node.get("Plans", []) for n in _nodes(child))]
