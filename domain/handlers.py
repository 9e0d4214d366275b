"""The domain's dispatch table: which handler applies each (source, event type).

The processors look events up here; an event type with no entry is `skipped`.
Each area of the domain adds its entries in `handler_table`.
"""

from __future__ import annotations

from domain.billing_handlers import billing_handlers
from domain.github_handlers import github_handlers
from outbox.handling import HandlerTable
from outbox.settings import Settings


def handler_table(settings: Settings) -> HandlerTable:
    """Every handler the domain offers, configured from `settings`."""
    table: HandlerTable = {}
    table.update(billing_handlers(settings))
    table.update(github_handlers(settings))
    return table
