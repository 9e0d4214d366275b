"""A TCP proxy on loopback that the tests own, to fail a network the way production does.

`FaultProxy(target_port)` listens on a free loopback port and forwards every connection to
127.0.0.1:`target_port`. Its modes:

- `pass_through()`: bytes flow both ways (the start);
- `blackhole()`: the network swallows everything. Bytes sent either way are held, sockets
  stay open, new connections are accepted and never answered (nor connected onward). When
  `pass_through()` ends it, what was held flows again, as TCP would retransmit it;
- `freeze()`: every connection opened before now is frozen for good (its bytes held
  forever, its sockets open: a primary that vanished behind a pooler or a virtual IP);
  connections opened afterwards flow at once.

It runs its own event loop on a thread, so a test drives it from plain code:

    with FaultProxy(cluster.port) as proxy:
        url = f"postgresql+psycopg://postgres@127.0.0.1:{proxy.port}/db"
        proxy.blackhole(); ...; proxy.pass_through()
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from types import TracebackType
from typing import Self

CHUNK = 65536  #: bytes read at once


class _Link:
    """One client connection and its upstream: frozen links hold their bytes forever."""

    def __init__(self) -> None:
        self.frozen = False
        self.writers: list[asyncio.StreamWriter] = []


class FaultProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._flowing: asyncio.Event | None = None
        self._server: asyncio.Server | None = None
        self._links: list[_Link] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def __enter__(self) -> Self:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # --- modes -------------------------------------------------------------------------

    def pass_through(self) -> None:
        self._call(lambda: self._flowing.set())  # type: ignore[union-attr]

    def blackhole(self) -> None:
        self._call(lambda: self._flowing.clear())  # type: ignore[union-attr]

    def freeze(self) -> None:
        """Freeze every connection opened so far; new ones flow."""

        def freeze_all() -> None:
            for link in self._links:
                link.frozen = True
            self._links = []

        self._call(freeze_all)

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    # --- the loop's side ---------------------------------------------------------------

    def _call(self, action: object) -> None:
        async def run() -> None:
            action()  # type: ignore[operator]

        asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    async def _listen(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        link = _Link()
        link.writers.append(client_w)
        self._links.append(link)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        try:
            await self._open_gate(link)
            upstream_r, upstream_w = await asyncio.open_connection(*self.target)
            link.writers.append(upstream_w)
            await asyncio.gather(
                self._pump(client_r, upstream_w, link), self._pump(upstream_r, client_w, link)
            )
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            for writer in link.writers:
                writer.close()
            self._tasks.discard(task)  # type: ignore[arg-type]
            if link in self._links:
                self._links.remove(link)

    async def _open_gate(self, link: _Link) -> None:
        assert self._flowing is not None
        while True:
            if link.frozen:
                await asyncio.Event().wait()  # forever: until the proxy closes
            if self._flowing.is_set():
                return
            await self._flowing.wait()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link
    ) -> None:
        try:
            while data := await reader.read(CHUNK):
                await self._open_gate(link)
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            # One side ended: end the other (its reader then ends its own pump).
            with contextlib.suppress(OSError):
                if writer.can_write_eof():
                    writer.write_eof()
            writer.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
