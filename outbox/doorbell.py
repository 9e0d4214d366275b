"""The doorbell: how the ingress tells the processors that rows are waiting.

The table is the source of truth; the bell only saves the sweeper's delay. An implementation
may drop a ring (Redis down): the sweeper finds the row anyway.

Two shapes: `Doorbell` rings from any thread and may block (the commands' rings, the
in-process broker); `LoopDoorbell` rings from the ingress's event loop and never blocks it
(the Redis doorbell `outbox serve` rings, processors/loop_doorbell.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Doorbell(Protocol):
    def ring(self, event_ids: Sequence[int]) -> None:
        """Say that these rows may be due now. May raise; callers never let that fail a request."""


class LoopDoorbell(Protocol):
    async def ring(self, event_ids: Sequence[int]) -> None:
        """Say that these rows may be due now, from the event loop. May raise."""

    async def close(self) -> None:
        """Release the connections (the ingress is stopping)."""


class SilentDoorbell:
    """Rings nothing: for an ingress whose rows are found by the sweeper alone."""

    def ring(self, event_ids: Sequence[int]) -> None:
        return None
