"""Deliveries no handler applies, stored already finished.

A GitHub App receives many deliveries it only keeps (pushes, check runs, comments): most
of what it is sent. Stored pending, each would cost a worker a claim and a finishing write,
only to end `skipped` with the reason "no handler for …". The ingress looks the type up
in the same handler table the workers build (HANDLER_TABLE, then the installed packages'
entry points; outbox/dispatch.py) and stores such a delivery `skipped` at once, with
that same reason, processed when received; it is never rung.

The table is the workers': deploy the ingress and the workers from one image with one set
of settings. A delivery skipped while they differed (a rolling deploy that adds a handler
for a new type) is applied by replaying it (docs/operations.md), as is one an older worker
skipped. A table that cannot be built skips nothing: every delivery is stored pending, and
the workers, which refuse to start on such a table, say why.
"""

from __future__ import annotations

import dataclasses
import logging

from outbox.dispatch import find_handler, load_handler_table, unhandled
from outbox.handling import describe
from outbox.models import Status
from outbox.registry import DispatchTable
from outbox.settings import Settings
from outbox.store import IncomingEvent

log = logging.getLogger("outbox.ingress")


class StoredOnly:
    """Marks the incoming events of types no handler applies as skipped."""

    def __init__(self, table: DispatchTable | None) -> None:
        self._table = table

    @classmethod
    def for_settings(cls, settings: Settings) -> StoredOnly:
        """The workers' handler table for `settings`; none (every delivery stored pending)
        if it cannot be built."""
        try:
            return cls(load_handler_table(settings))
        except Exception as exc:  # the workers refuse to start on it and say why
            log.error(
                "handler table not built; every delivery is stored pending",
                extra={"error": describe(exc)[:300]},
            )
            return cls(None)

    def finished(self, event: IncomingEvent) -> IncomingEvent:
        """`event`, or, when it is pending and no handler applies its type, the same event
        stored skipped with the reason the workers would give."""
        if self._table is None or event.status != Status.PENDING:
            return event
        if find_handler(self._table, event.source, event.event_type) is not None:
            return event
        return dataclasses.replace(
            event, status=Status.SKIPPED, reason=unhandled(event.source, event.event_type)
        )
