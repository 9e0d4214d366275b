"""The names a stored event's source and status take, apart from the tables that hold them.

Plain enums with no database code: the `outbox` command offers them as choices without
loading SQLAlchemy (outbox/models.py re-exports them beside the tables).
"""

from __future__ import annotations

from enum import StrEnum


class Source(StrEnum):
    GITHUB = "github"
    STRIPE = "stripe"


class Status(StrEnum):
    """Where a row is. pending -> processing -> done; failures go back to pending, then dead."""

    PENDING = "pending"
    PROCESSING = "processing"
    DONE = "done"
    DEAD = "dead"
    SKIPPED = "skipped"


FINISHED = (Status.DONE, Status.SKIPPED)
#: Rows that still hold their place in their object's queue (see the ordering rule in claim).
IN_LINE = (Status.PENDING, Status.PROCESSING)
#: Rows `replay` may put back: finished or dead, so not already in play.
REPLAYABLE = (Status.DONE, Status.DEAD, Status.SKIPPED)
