"""How long the `outbox` command takes to start: `outbox --help` and `outbox events list`.

Each command runs as a new process (as an operator runs it) on a throwaway SQLite database
of 200 events, several times; the figure is the median. Beside them, the floor any command
pays: the interpreter alone, and importing SQLAlchemy's ORM, which every command that reads
the database needs.

    .venv/bin/python -m bench.cli_startup [--runs 21]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

TARGET_SECONDS = 0.25  #: the start-up an operator should not notice


def timed(argv: list[str], env: dict[str, str], runs: int) -> list[float]:
    """Wall-clock seconds of each of `runs` runs of `argv`, after one warm-up run."""
    seconds = []
    for n in range(runs + 1):
        started = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if n:  # the first run fills the file cache and writes the bytecode
            seconds.append(time.perf_counter() - started)
    return seconds


def events_database(folder: Path) -> str:
    """A migrated SQLite database holding 200 pending events; its URL."""
    from outbox.db import make_engine
    from outbox.migrate import upgrade
    from tests.factories import incoming, record

    url = f"sqlite:///{folder / 'startup.db'}"
    upgrade(url)
    engine = make_engine(url)
    record(
        engine, *(replace(incoming(event_type="invoice.paid"), account_id=42) for _ in range(200))
    )
    engine.dispose()
    return url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    runs = parser.parse_args().runs
    print(f"cores {os.cpu_count()}, load before {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as folder:
        env = {**os.environ, "DATABASE_URL": events_database(Path(folder)), "COLUMNS": "80"}
        python = [sys.executable]
        cases = [
            ("outbox --help", [*python, "-m", "outbox", "--help"], True),
            ("outbox events list", [*python, "-m", "outbox", "events", "list"], True),
            ("python -c pass", [*python, "-c", "pass"], False),
            ("import sqlalchemy.orm", [*python, "-c", "import sqlalchemy.orm"], False),
        ]
        for name, argv, is_target in cases:
            seconds = timed(argv, env, runs)
            median = statistics.median(seconds)
            verdict = ""
            if is_target:
                verdict = "  pass" if median < TARGET_SECONDS else f"  over {TARGET_SECONDS} s"
            print(f"{name:<24} median {median:.3f} s  min {min(seconds):.3f} s{verdict}")
    print(f"load after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
