"""How long the `outbox` command takes to start: `outbox --help` and `outbox events list`.

Each command runs as a new process (as an operator runs it) on a throwaway SQLite database
of 200 events, several times; the figure is the median. Beside them: the interpreter alone;
reading the whole settings (pydantic-settings), which the commands that write pay and a
listing does not (it reads its three, outbox/reader_settings.py); importing SQLAlchemy's
ORM, which the same commands pay; and where the time of one `outbox events list` goes,
timed inside the process.

    .venv/bin/python -m bench.cli_startup [--runs 21]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

TARGET_SECONDS = 0.25  #: the start-up an operator should not notice
READ_SETTINGS = "from outbox.settings import get_settings; get_settings()"


def timed(argv: list[str], env: dict[str, str], runs: int) -> list[float]:
    """Wall-clock seconds of each of `runs` runs of `argv`, after one warm-up run."""
    seconds = []
    for n in range(runs + 1):
        started = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if n:  # the first run fills the file cache and writes the bytecode
            seconds.append(time.perf_counter() - started)
    return seconds


#: Runs `outbox events list` in this process and prints, as JSON, the seconds of each phase.
PHASES_PROBE = """
import json, sys, time
started = time.perf_counter()
import outbox.cli
from outbox.cli import events
from outbox import queries
seconds = {"import outbox.cli": time.perf_counter() - started}
marks = {}
def timed(name, function):
    def run(*args, **kwargs):
        begun = marks.setdefault(name, time.perf_counter())
        try:
            return function(*args, **kwargs)
        finally:
            seconds[name] = time.perf_counter() - begun
    return run
events.reader_settings = timed("settings", events.reader_settings)
queries.list_page = timed("query", queries.list_page)
events.print_events = timed("render", events.print_events)
called = time.perf_counter()
try:
    outbox.cli.app(["events", "list"])
except SystemExit:
    pass
seconds["typer, before the command"] = marks["settings"] - called
seconds["whole run"] = time.perf_counter() - started
sys.stdout.flush()
sys.stderr.write(json.dumps(seconds) + "\\n")
"""


def phases(env: dict[str, str], runs: int) -> dict[str, float]:
    """The median seconds of each phase of `outbox events list`, over `runs` processes."""
    seen: dict[str, list[float]] = {}
    for _ in range(runs):
        done = subprocess.run(
            [sys.executable, "-c", PHASES_PROBE], env=env, capture_output=True, text=True
        )
        for name, value in json.loads(done.stderr.splitlines()[-1]).items():
            seen.setdefault(name, []).append(value)
    return {name: statistics.median(values) for name, values in seen.items()}


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
        # An installed command has its bytecode: the warm-up run writes it, whatever the
        # shell running the benchmark says about bytecode.
        shell = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env = {**shell, "DATABASE_URL": events_database(Path(folder)), "COLUMNS": "80"}
        python = [sys.executable]
        cases = [  # the interpreter first: each figure is also given as a multiple of it
            ("python -c pass", [*python, "-c", "pass"], False),
            ("outbox --help", [*python, "-m", "outbox", "--help"], True),
            ("outbox events list", [*python, "-m", "outbox", "events", "list"], True),
            ("read all the settings", [*python, "-c", READ_SETTINGS], False),
            ("import sqlalchemy.orm", [*python, "-c", "import sqlalchemy.orm"], False),
        ]
        interpreter = 0.0
        for name, argv, is_target in cases:
            seconds = timed(argv, env, runs)
            median = statistics.median(seconds)
            interpreter = interpreter or median
            verdict = ""
            if is_target:
                verdict = "  pass" if median < TARGET_SECONDS else f"  over {TARGET_SECONDS} s"
            print(
                f"{name:<24} median {median:.3f} s  min {min(seconds):.3f} s"
                f"  {median / interpreter:4.1f}x python -c pass{verdict}"
            )
        print("outbox events list, inside the process (medians):")
        for name, seconds in phases(env, runs).items():
            print(f"  {name:<26} {seconds:.3f} s")
    print(f"load after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
