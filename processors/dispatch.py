"""The dispatch table: which domain handler applies each (source, event type).

The table itself is the domain's (`domain.handlers.handler_table`); the `HANDLER_TABLE`
setting names the function that builds it, so tests and drills can run the real
processors over a handler of their own without touching production code.
"""

from __future__ import annotations

import importlib

from outbox.handling import Handler, HandlerTable
from outbox.settings import Settings


class HandlerTableNotFound(ValueError):
    """`HANDLER_TABLE` names nothing importable, or something that is not a table builder."""


def load_handler_table(settings: Settings) -> HandlerTable:
    """Build the table named by `settings.handler_table` (`module:function`)."""
    module_name, _, function_name = settings.handler_table.partition(":")
    try:
        builder = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as exc:
        raise HandlerTableNotFound(f"HANDLER_TABLE={settings.handler_table}: {exc}") from exc
    table = builder(settings)
    if not isinstance(table, dict):
        raise HandlerTableNotFound(
            f"HANDLER_TABLE={settings.handler_table} returned {type(table).__name__}, not a table"
        )
    return table


def find_handler(table: HandlerTable, source: str, event_type: str) -> Handler | None:
    return table.get((source, event_type))
