"""A small HTTP/1.1 load generator: keep-alive connections, pre-built signed requests.

Closed loop (N senders, each sends its next request when the last is answered) measures
throughput; open loop (a steady rate, whatever the answers do) measures latency without
the coordinated-omission that a closed loop hides.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import uvloop

T = TypeVar("T")


def run(load: Coroutine[Any, Any, T]) -> T:
    """Run a load on uvloop, the loop the servers run on, with this process's heap frozen.

    The senders share the machine with the servers they measure: on asyncio's own loop
    they took ~33 µs of CPU a request, on uvloop ~27. Frozen: the benchmark process holds
    SQLAlchemy, the project and the pre-built requests, and every full collection walked
    them while the senders stood still, 50-120 ms at a time. Those pauses were the p99 of
    the steady runs, the bare endpoint's as well (44 ms; 1.6 ms frozen, 2 paired runs).
    """
    gc.collect()
    gc.freeze()
    try:
        return uvloop.run(load)
    finally:
        gc.unfreeze()


@dataclass
class LoadResult:
    sent: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)  # seconds
    #: time.perf_counter() each request was due at, beside its latency (open loop only)
    scheduled: list[float] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def rate(self) -> float:
        return self.sent / self.elapsed if self.elapsed else 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]

    def percentile_between(self, p: float, start: float, end: float) -> float:
        """The percentile over the requests due between two perf_counter() moments."""
        inside = [
            latency
            for latency, due in zip(self.latencies, self.scheduled, strict=True)
            if start <= due <= end
        ]
        return LoadResult(latencies=inside).percentile(p)


def build_request(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    if length:
        await reader.readexactly(length)
    return status


class _Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def send(self, request: bytes) -> int:
        for attempt in (1, 2):
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            try:
                self.writer.write(request)
                assert self.reader is not None
                return await _read_response(self.reader)
            except (ConnectionError, asyncio.IncompleteReadError):
                self.close()
                if attempt == 2:
                    return 0
        return 0

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def closed_loop(
    host: str, port: int, requests: Sequence[bytes], concurrency: int, duration: float
) -> LoadResult:
    """`concurrency` senders, each sending back to back, for `duration` seconds."""
    result = LoadResult()
    cursor = iter(range(len(requests)))
    stop_at = time.perf_counter() + duration

    async def sender() -> None:
        conn = _Connection(host, port)
        try:
            while time.perf_counter() < stop_at:
                index = next(cursor, None)
                if index is None:
                    return
                started = time.perf_counter()
                status = await conn.send(requests[index])
                result.latencies.append(time.perf_counter() - started)
                result.statuses[status] = result.statuses.get(status, 0) + 1
                result.sent += 1
        finally:
            conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(concurrency)))
    result.elapsed = time.perf_counter() - started
    return result


async def open_loop(
    host: str,
    port: int,
    requests: Sequence[bytes],
    rate: float,
    duration: float,
    connections: int = 64,
) -> LoadResult:
    """Send at a steady `rate` per second for `duration` seconds; latency is measured from
    each request's scheduled time, so a stalled server shows up in the percentiles."""
    result = LoadResult()
    pool: asyncio.Queue[_Connection] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(_Connection(host, port))
    total = min(len(requests), int(rate * duration))
    started = time.perf_counter()

    async def one(index: int, scheduled: float) -> None:
        conn = await pool.get()
        try:
            status = await conn.send(requests[index])
        finally:
            pool.put_nowait(conn)
        result.latencies.append(time.perf_counter() - scheduled)
        result.scheduled.append(scheduled)
        result.statuses[status] = result.statuses.get(status, 0) + 1
        result.sent += 1

    tasks = []
    for index in range(total):
        scheduled = started + index / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(index, scheduled)))
    await asyncio.gather(*tasks)
    result.elapsed = time.perf_counter() - started
    while not pool.empty():
        pool.get_nowait().close()
    return result
