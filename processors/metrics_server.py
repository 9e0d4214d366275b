"""The Prometheus endpoints of `outbox worker` and `outbox sweep`, on METRICS_PORT.

The worker is Dramatiq's parent and the processes it forks, each with its own counters.
Counted once, they are summed by prometheus-client's multiprocess mode: `outbox worker`
gives the processes an empty PROMETHEUS_MULTIPROC_DIR before Dramatiq starts, each
process writes its metrics to its own files there, and one more process Dramatiq forks
and stops with the others (`--fork-function`, `serve_worker_metrics`) serves their sum.

Dramatiq's own Prometheus middleware is not used: it switches multiprocess mode on only
after the broker is set up, when this project's metrics already exist in memory (never
written to files, so never served); its directory is one fixed path under /tmp, shared by
every worker of the machine and never emptied, so a restart counts the last run's files
again; and it listens on dramatiq_prom_port, not METRICS_PORT.

The sweeper is one process: its registry, plus the backlog gauges (processors/backlog.py).
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
from pathlib import Path

from outbox.settings import Settings

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_multiproc_dir(environ: dict[str, str] | os._Environ[str] = os.environ) -> str:
    """An empty directory for the worker processes' metric files, named in `environ`.

    A directory the environment already names is emptied of its metric files (what a
    previous run left would be counted again); otherwise a new temporary one is made.
    """
    given = environ.get(MULTIPROC_ENV) or environ.get(MULTIPROC_ENV.lower())
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
    else:
        path = Path(tempfile.mkdtemp(prefix="outbox-worker-metrics-"))
    environ[MULTIPROC_ENV] = str(path)
    return str(path)


def check_port_free(host: str, port: int) -> None:
    """Raises OSError if nothing can listen on host:port (taken, or no such address)."""
    with socket.socket(_family(host)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def serve_worker_metrics() -> int:
    """Dramatiq's fork function: serve the sum of every worker process's metric files
    until Dramatiq stops this process."""
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    from outbox.settings import get_settings

    settings = get_settings()
    assert settings.metrics_port is not None, "forked only when METRICS_PORT is set"
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    start_http_server(settings.metrics_port, settings.metrics_host, registry=registry)
    threading.Event().wait()  # the server runs in its thread; SIGTERM ends the process
    return 0


def serve_sweeper_metrics(settings: Settings, sessions) -> None:  # type: ignore[no-untyped-def]
    """Serve this process's metrics and the backlog gauges on METRICS_PORT, in a thread."""
    from prometheus_client import REGISTRY, start_http_server

    from processors.backlog import BacklogCollector

    assert settings.metrics_port is not None
    REGISTRY.register(BacklogCollector(sessions))
    start_http_server(settings.metrics_port, settings.metrics_host, registry=REGISTRY)
