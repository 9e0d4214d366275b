"""The entry point Dramatiq's own CLI loads in each worker process (`outbox worker` runs it).

    dramatiq processors.worker:setup --processes 2 --threads 8

Dramatiq forks the worker processes first and calls `setup` in each, so every process
makes its own database engine and Redis connections.
"""

from __future__ import annotations

import gc
import sys

from outbox import tracing
from outbox.logs import configure_logging
from outbox.settings import get_settings
from processors import runtime
from processors.broker import setup_broker

#: Seconds a thread may hold the GIL while another waits (Python's default is 0.005): a
#: worker thread back from a database answer, or the consumer with a new message, waits
#: at most this long for a thread that is busy in Python.
GIL_SWITCH_INTERVAL = 0.001


def setup() -> None:
    settings = get_settings()
    configure_logging(settings.log_level)
    runtime.configure(settings).handlers  # noqa: B018  (a bad HANDLER_TABLE stops the boot)
    tracing.configure(settings, "worker")  # in each process: its exporter thread is its own
    setup_broker(settings, in_process=False)
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    # What is loaded by now lives as long as the process: keep it out of every collection.
    gc.freeze()
