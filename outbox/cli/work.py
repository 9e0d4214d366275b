"""Commands that run the processors on Redis: `outbox worker` and `outbox sweep`."""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType
from typing import TYPE_CHECKING

import typer

from outbox.cli.common import fail, friendly_errors, get_settings, print_json_lines, say
from outbox.cli.run import require_migrated, safe_url
from outbox.logs import configure_logging

if TYPE_CHECKING:
    from outbox.settings import Settings

#: Milliseconds a stopping worker process lets running messages finish before it exits.
WORKER_SHUTDOWN_TIMEOUT_MS = 30_000
#: Milliseconds an idle worker waits at most before it looks at Redis again (Dramatiq's
#: default, 1000, is what a webhook would wait for its worker after a quiet second; at
#: 20, an idle process asks Redis about 100 times a second, one small script call each).
WORKER_IDLE_POLL_MS = 20


def register(app: typer.Typer) -> None:
    app.command()(worker)
    app.command()(sweep)


@friendly_errors
def worker(
    processes: int | None = typer.Option(
        None, "--processes", "-p", min=1, help="Worker processes [default: WORKER_PROCESSES]."
    ),
    threads: int | None = typer.Option(
        None, "--threads", "-t", min=1, help="Threads per process [default: WORKER_THREADS]."
    ),
) -> None:
    """Run Dramatiq worker processes that apply events (Redis broker from REDIS_URL)."""
    settings = get_settings()
    _check_services(settings)
    argv = [
        sys.executable,
        "-m",
        "dramatiq",
        "processors.worker:setup",
        "--processes",
        str(processes or settings.worker_processes),
        "--threads",
        str(threads or settings.worker_threads),
        "--skip-logging",
        "--worker-shutdown-timeout",
        str(WORKER_SHUTDOWN_TIMEOUT_MS),
    ]
    if settings.metrics_port is not None:
        argv += _worker_metrics(settings)
    os.environ.setdefault("dramatiq_worker_timeout", str(WORKER_IDLE_POLL_MS))
    sys.stdout.flush()
    sys.stderr.flush()
    # Dramatiq's own process model (a parent that forks the workers and stops them all when
    # one dies) becomes this process, so the platform's signals reach it directly.
    os.execv(sys.executable, argv)


@friendly_errors
def sweep(
    once: bool = typer.Option(False, "--once", help="Do one pass, print what it did, and exit."),
    json_output: bool = typer.Option(False, "--json", help="With --once: print one JSON object."),
) -> None:
    """Release expired leases and ring due rows again, every SWEEP_INTERVAL_SECONDS."""
    from processors import runtime
    from processors.broker import setup_broker
    from processors.sweeper import run_sweeper, sweep_once

    settings = get_settings()
    require_migrated(settings)
    configure_logging(settings.log_level)
    from outbox import tracing

    tracing.configure(settings, "sweep")
    setup_broker(settings, in_process=False)
    processors = runtime.configure(settings)
    if once:
        report = sweep_once(processors)
        if json_output:
            print_json_lines(
                [{"released": report.released, "rung": report.rung, "errors": report.errors}]
            )
        else:
            say(report.summary())
        if not report.ok:
            raise typer.Exit(1)
        return
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if settings.metrics_port is not None:
        from processors.metrics_server import serve_sweeper_metrics

        _require_free_port(settings)
        serve_sweeper_metrics(settings, processors.sessions)
        say(f"outbox: sweeper metrics on http://{settings.metrics_host}:{settings.metrics_port}/")
    run_sweeper(processors, stop)


def _worker_metrics(settings: Settings) -> list[str]:
    """Dramatiq's arguments that serve the worker processes' metrics, counted once, on
    METRICS_PORT (processors/metrics_server.py); their files go to a fresh directory."""
    from processors.metrics_server import prepare_multiproc_dir

    _require_free_port(settings)
    prepare_multiproc_dir()
    return ["--fork-function", "processors.metrics_server:serve_worker_metrics"]


def _require_free_port(settings: Settings) -> None:
    from processors.metrics_server import check_port_free

    assert settings.metrics_port is not None
    try:
        check_port_free(settings.metrics_host, settings.metrics_port)
    except OSError as exc:
        fail(
            f"cannot serve metrics on {settings.metrics_host}:{settings.metrics_port} "
            f"(METRICS_HOST / METRICS_PORT): {exc.strerror or exc}"
        )


def _check_services(settings: Settings) -> None:
    """Fail now, with the reason, rather than start workers that cannot do anything."""
    import redis

    from outbox.dispatch import HandlerTableNotFound, load_handler_table

    try:
        timeout = settings.redis_timeout_seconds
        redis.Redis.from_url(
            settings.redis_url, socket_connect_timeout=timeout, socket_timeout=timeout
        ).ping()
    except redis.RedisError as exc:
        fail(f"Redis unreachable at {safe_url(settings.redis_url)}: {exc}")
    require_migrated(settings)
    try:
        load_handler_table(settings)
    except HandlerTableNotFound as exc:
        fail(str(exc))
