"""Fixtures for driving the ingress app in-process and as a real uvicorn server."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import pytest
import uvicorn
from sqlalchemy import Engine
from starlette.testclient import TestClient
from starlette.types import ASGIApp

from ingress.app import create_app
from outbox.dispatch import load_handler_table
from outbox.registry import DispatchTable
from outbox.settings import Settings


class RecordingDoorbell:
    """Remembers every ring, so tests can see what the processors would have been told."""

    def __init__(self, fail: bool = False) -> None:
        self.rings: list[list[int]] = []
        self.fail = fail
        self._lock = threading.Lock()

    def ring(self, event_ids: Sequence[int]) -> None:
        if self.fail:
            raise ConnectionError("broker down")
        with self._lock:
            self.rings.append(list(event_ids))

    def rung_ids(self, wait: float = 2.0) -> set[int]:
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and not self.rings:
            time.sleep(0.01)
        time.sleep(0.05)  # let a ring in flight land
        with self._lock:
            return {i for ring in self.rings for i in ring}


@pytest.fixture
def doorbell() -> RecordingDoorbell:
    return RecordingDoorbell()


@pytest.fixture
def client(settings: Settings, engine: Engine, doorbell: RecordingDoorbell) -> Iterator[TestClient]:
    app = create_app(settings, engine=engine, doorbell=doorbell)
    with TestClient(app) as test_client:
        yield test_client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def served(app: ASGIApp) -> Iterator[str]:
    """`app` served by uvicorn on a free loopback port, for real clients; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def live_url(settings: Settings, engine: Engine, doorbell: RecordingDoorbell) -> Iterator[str]:
    """The ingress served by uvicorn on a free loopback port, for real concurrent clients."""
    with served(create_app(settings, engine=engine, doorbell=doorbell)) as url:
        yield url


@pytest.fixture
def handler_table(settings: Settings) -> DispatchTable:
    """The handler table the ingress and the workers build for `settings`."""
    return load_handler_table(settings)


@pytest.fixture
def settings_and_engine(settings: Settings, engine: Engine) -> tuple[Settings, Engine]:
    """Both at once, for hypothesis tests that reuse one database across examples."""
    return settings, engine
