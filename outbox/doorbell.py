"""The doorbell: how the ingress tells the processors that rows are waiting.

The table is the source of truth; the bell only saves the sweeper's delay. An implementation
may drop a ring (Redis down): the sweeper finds the row anyway.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Doorbell(Protocol):
    def ring(self, event_ids: Sequence[int]) -> None:
        """Say that these rows may be due now. May raise; callers never let that fail a request."""


class SilentDoorbell:
    """Rings nothing: for an ingress whose rows are found by the sweeper alone."""

    def ring(self, event_ids: Sequence[int]) -> None:
        return None
