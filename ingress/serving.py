"""The uvicorn server `outbox serve` and `outbox dev` run: it says where it listens."""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from typing import Any

import uvicorn


class AnnouncedServer(uvicorn.Server):
    """uvicorn's server, saying in one line where it listens once its sockets are bound
    (so `--port 0` tells the port it got, and a port already taken says nothing)."""

    def __init__(self, config: uvicorn.Config, announce: Callable[[str], None]) -> None:
        super().__init__(config)
        self._announce = announce

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self._announce(f"outbox: webhook ingress listening on {listening_on(self.servers)}")


def listening_on(servers: Sequence[Any]) -> str:
    """The bound addresses as URLs, the real port when 0 was asked for."""
    urls = []
    for server in servers:
        for sock in server.sockets:
            host, port = sock.getsockname()[:2]
            urls.append(f"http://{f'[{host}]' if ':' in host else host}:{port}")
    return ", ".join(dict.fromkeys(urls)) or "(no socket)"
