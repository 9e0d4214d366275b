"""The public edge against hostile clients, through a real `outbox serve` (ingress/edge.py,
ingress/limits.py): oversized heads, slow senders, held bodies, too many connections.

Each test runs a prober beside the attack: signed webhooks sent one after another, which
must keep getting 200 (and promptly) while the attack goes on.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from ingress.signatures import github_signature
from outbox.models import WebhookEvent
from tests.conftest import GITHUB_SECRET
from tests.services import OutboxProcess, free_port, outbox_env

#: The edge is the same code whatever the storage behind it: the attacks run once, against
#: the storage production runs.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.parametrize(
        "database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
    ),
]

FLOOD_BYTES = 64 * 1024 * 1024  #: one flood request's header, as in the attack measured


@contextlib.contextmanager
def serving(database_url: str, tmp_path: Path, **settings: object) -> Iterator[int]:
    """`outbox serve` on a free port with `settings`; yields the port."""
    port = free_port()
    env = outbox_env(database_url, github_webhook_secret=GITHUB_SECRET, **settings)
    with OutboxProcess(["serve", "--port", str(port)], env, port=port, log_dir=tmp_path) as proc:
        yield port
        assert "Traceback" not in proc.output(), proc.output()[-3000:]


@dataclass
class Prober:
    """Signed webhooks, one after another on one keep-alive connection, until stopped."""

    port: int
    latencies: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Prober:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=30)

    def _run(self) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30) as client:
            while not self._stop.is_set():
                body = json.dumps({"action": "opened", "installation": {"id": 42}}).encode()
                headers = {
                    "Content-Type": "application/json",
                    "X-GitHub-Event": "issues",
                    "X-GitHub-Delivery": f"probe-{uuid.uuid4()}",
                    "X-Hub-Signature-256": github_signature(GITHUB_SECRET, body),
                }
                started = time.perf_counter()
                status = client.post("/webhooks/github", content=body, headers=headers).status_code
                self.latencies.append(time.perf_counter() - started)
                self.statuses.append(status)
                time.sleep(0.01)

    def p99(self) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def _rows(engine) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(WebhookEvent)) or 0)


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    return sock


def _answer(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """What the server wrote before closing (b"" when it only closed or reset)."""
    sock.settimeout(timeout)
    chunks = []
    with contextlib.suppress(ConnectionResetError, TimeoutError):
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _flood(port: int, stop: threading.Event, sent_per_attempt: list[int]) -> None:
    """Requests with a FLOOD_BYTES header, again and again, each until the server cuts it."""
    piece = b"a" * (1024 * 1024)
    while not stop.is_set():
        sent = 0
        try:
            with _connect(port) as sock:
                sock.sendall(b"POST /webhooks/github HTTP/1.1\r\nHost: x\r\nX-Flood: ")
                while sent < FLOOD_BYTES and not stop.is_set():
                    sock.sendall(piece)
                    sent += len(piece)
        except OSError:  # the server closed the connection: the attempt is over
            pass
        sent_per_attempt.append(sent)


def test_a_header_flood_is_cut_short_and_signed_webhooks_stay_prompt(
    database_url, engine, tmp_path
):
    with serving(database_url, tmp_path) as port:
        with _connect(port) as sock:  # one head just over the cap: answered, then closed
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000)
            answer = _answer(sock)
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
        assert b'"error":"request line and headers are over 65536 bytes"' in answer
        with _connect(port) as sock:  # what the parser refuses is answered in JSON too
            sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
            answer = _answer(sock)
        assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
        assert b"content-type: application/json" in answer and b'{"error":' in answer

        stop, sent_per_attempt = threading.Event(), []
        flooders = [
            threading.Thread(target=_flood, args=(port, stop, sent_per_attempt), daemon=True)
            for _ in range(2)
        ]
        with Prober(port) as prober:
            for flooder in flooders:
                flooder.start()
            time.sleep(6)
            stop.set()
        for flooder in flooders:
            flooder.join(timeout=30)
    assert sent_per_attempt and max(sent_per_attempt) < FLOOD_BYTES / 4, sent_per_attempt
    assert set(prober.statuses) == {200}
    assert prober.p99() < 0.25, (prober.p99(), len(prober.latencies))
    assert _rows(engine) == len(prober.statuses)


def _open_slowly(port: int, kind: str) -> socket.socket:
    sock = _connect(port)
    if kind == "slow head":
        sock.sendall(b"POST /webhooks/github HTTP/1.1\r\n")
    elif kind == "endless chunks":
        sock.sendall(
            b"POST /webhooks/github HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
    elif kind == "one byte short":
        body = b"x" * 1023
        sock.sendall(
            b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nContent-Length: 1024\r\n\r\n" + body
        )
    return sock


def _trickle(sock: socket.socket, kind: str) -> None:
    """The next few bytes of a slow sender (a byte a second is what was measured)."""
    with contextlib.suppress(OSError):
        if kind == "slow head":
            sock.send(b"X")
        elif kind == "endless chunks":
            sock.send(b"1\r\nx\r\n")


def _sent_so_far(sock: socket.socket) -> bytes | None:
    """What the server has written and not yet read, without waiting (None: nothing yet).

    The socket is made non-blocking for the read: one with a timeout waits for data even
    when asked not to (MSG_DONTWAIT), up to its whole timeout.
    """
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        return sock.recv(65536)
    except BlockingIOError:
        return None
    finally:
        sock.settimeout(timeout)


def _closed_by_server(sock: socket.socket) -> bool:
    try:
        return _sent_so_far(sock) == b""
    except OSError:
        return True


def test_slow_senders_and_held_bodies_are_cut_off_by_the_deadlines(database_url, engine, tmp_path):
    kinds = ["slow head", "endless chunks", "one byte short", "idle"]
    limits = {"header_timeout_seconds": 1, "body_timeout_seconds": 2}
    with serving(database_url, tmp_path, **limits) as port, Prober(port) as prober:
        held = [(kind, _open_slowly(port, kind)) for kind in kinds for _ in range(25)]
        open_ = dict(enumerate(held))
        deadline = time.monotonic() + 8
        while open_ and time.monotonic() < deadline:
            for n, (kind, sock) in list(open_.items()):
                if _closed_by_server(sock):
                    sock.close()
                    del open_[n]
                else:
                    _trickle(sock, kind)
            time.sleep(0.5)
        still_open = sorted({kind for kind, _ in open_.values()})
        for _, sock in open_.values():
            sock.close()
    assert still_open == [], f"held past the deadlines: {still_open}"
    assert set(prober.statuses) == {200} and len(prober.statuses) > 10
    assert _rows(engine) == len(prober.statuses)


def test_a_request_past_the_connection_bound_is_answered_503_and_later_ones_are_served(
    database_url, engine, tmp_path
):
    with serving(database_url, tmp_path, max_connections=20, body_timeout_seconds=3) as port:
        held = [_open_slowly(port, "one byte short") for _ in range(20)]
        time.sleep(0.5)
        with _connect(port) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = _answer(sock)
        assert answer.startswith(b"HTTP/1.1 503 "), answer[:200]
        assert b'"error":"too many connections, try again later"' in answer
        for sock in held:
            sock.close()
        time.sleep(0.5)
        with Prober(port) as prober:
            time.sleep(1)
    assert set(prober.statuses) == {200}


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_bodies_held_open_cost_no_more_memory_than_the_budget(database_url, engine, tmp_path):
    port = free_port()
    env = outbox_env(
        database_url,
        github_webhook_secret=GITHUB_SECRET,
        body_buffer_bytes=2 * 1024 * 1024,
        body_timeout_seconds=30,
    )
    with OutboxProcess(["serve", "--port", str(port)], env, port=port, log_dir=tmp_path) as proc:
        before = _rss_bytes(proc.pid)
        held, busy = [], 0
        piece = b"x" * (64 * 1024)
        for _ in range(40):  # 40 bodies of 4 MiB, each sent up to 1 MiB and then held
            sock = _connect(port)
            sock.sendall(
                b"POST /webhooks/github HTTP/1.1\r\nHost: x\r\nContent-Length: 4194304\r\n\r\n"
            )
            with contextlib.suppress(OSError):
                for _ in range(16):
                    sock.send(piece)
            held.append(sock)
        time.sleep(1.5)
        grown = _rss_bytes(proc.pid) - before
        for sock in held:
            with contextlib.suppress(OSError):
                if (_sent_so_far(sock) or b"").startswith(b"HTTP/1.1 503 "):
                    busy += 1
        with Prober(port) as prober:
            time.sleep(1)
        for sock in held:
            sock.close()
    assert grown < 16 * 1024 * 1024, f"the process grew {grown / 2**20:.1f} MiB"
    assert busy > 0
    assert set(prober.statuses) == {200}
