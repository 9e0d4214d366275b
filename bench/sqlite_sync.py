"""What `synchronous=FULL` costs the embedded SQLite default, next to NORMAL, in the same run.

    .venv/bin/python -m bench.sqlite_sync [--seconds 5] [--rounds 3]

A 2xx promises the webhook is stored; in WAL mode NORMAL may lose the last committed
transactions on power loss, FULL syncs the log at every commit (outbox/db.py). Each round
runs, for NORMAL then FULL, the real ingress (`outbox serve`'s app under uvicorn, in a
process of its own, on a fresh migrated SQLite file) and sends it signed 4 KB GitHub
deliveries from closed loops of 1 sender (every webhook its own commit) and 16 senders
(the ingress's writer groups concurrent webhooks into one commit). Figures: stored
webhooks per second and the median answer time, per mode, median of the rounds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from bench.common import free_port, print_table, python, server, write_results
from bench.ingress import SECRET, signed_requests
from bench.loadgen import closed_loop
from bench.loadgen import run as run_load

MODES = ("NORMAL", "FULL")
SENDERS = (1, 16)


def serve(database: str, mode: str, port: int) -> None:
    """The ingress on `database`, its connections switched to `synchronous=mode`."""
    import uvicorn
    from sqlalchemy import event

    from ingress.app import create_app
    from outbox.db import make_engine
    from outbox.settings import get_settings

    engine = make_engine(database)

    @event.listens_for(engine, "connect")
    def _synchronous(dbapi_connection: Any, _record: Any) -> None:
        # Runs after outbox.db's own connect hook, which sets FULL.
        dbapi_connection.execute(f"PRAGMA synchronous={mode}")

    app = create_app(get_settings(), engine=engine)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def measure(seconds: float, rounds: int) -> list[dict[str, object]]:
    from outbox.migrate import upgrade

    results: dict[tuple[str, int], list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="outbox-sqlite-sync-") as folder:
        for round_ in range(rounds):
            for mode in MODES:
                database = f"sqlite:///{Path(folder) / f'{mode}-{round_}.db'}"
                upgrade(database)
                port = free_port()
                env = {
                    "DATABASE_URL": database,
                    "GITHUB_WEBHOOK_SECRET": SECRET,
                    "LOG_LEVEL": "WARNING",
                    "REDIS_URL": "redis://127.0.0.1:1/0",
                }
                argv = [python(), "-m", "bench.sqlite_sync", "serve", database, mode, str(port)]
                with server(argv, port, env):
                    for senders in SENDERS:
                        requests = signed_requests(port, int(seconds * 4000), uuid.uuid4().hex)
                        load = run_load(closed_loop("127.0.0.1", port, requests, senders, seconds))
                        stored = load.statuses.get(200, 0) / load.elapsed
                        median_ms = load.percentile(50) * 1000
                        results.setdefault((mode, senders), []).append((stored, median_ms))
    rows: list[dict[str, object]] = []
    for senders in SENDERS:
        for mode in MODES:
            runs = results[(mode, senders)]
            rows.append(
                {
                    "synchronous": mode,
                    "senders": senders,
                    "stored_per_second": round(statistics.median(r[0] for r in runs)),
                    "p50_ms": round(statistics.median(r[1] for r in runs), 2),
                    "rounds": ", ".join(f"{r[0]:.0f}/s" for r in runs),
                }
            )
    return rows


def main() -> None:
    if sys.argv[1:2] == ["serve"]:
        serve(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each closed loop")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of NORMAL then FULL")
    args = parser.parse_args()
    rows = measure(args.seconds, args.rounds)
    print_table(rows)
    write_results("sqlite_sync", rows, {"cores": os.cpu_count(), "seconds": args.seconds})


if __name__ == "__main__":
    main()
