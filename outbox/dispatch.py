"""The dispatch table: which handlers apply each (source, event type).

It is built once per process, in this order (outbox/registry.py runs matching handlers in
the order they were registered):
1. the table `HANDLER_TABLE` names (`module:function`, default the domain's
   `domain.handlers.handler_table`), so tests and drills can run the real processors over
   a handler of their own without touching production code;
2. the handlers of every installed package that declares an entry point in the
   `webhook_outbox.handlers` group, by entry point name: each names a
   `register(registry, settings)` function (docs/handlers.md).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from importlib.metadata import EntryPoint, entry_points

from outbox.handling import Handler, describe
from outbox.registry import DispatchTable, InvalidPattern, Registry
from outbox.settings import Settings

#: The entry-point group an installed package declares its handlers in.
ENTRY_POINT_GROUP = "webhook_outbox.handlers"


class HandlerTableNotFound(ValueError):
    """`HANDLER_TABLE` or a handlers entry point names nothing importable, or something that
    does not build handlers; the message is one line naming which."""


def load_handler_table(settings: Settings) -> DispatchTable:
    """Every handler of this process: `HANDLER_TABLE`'s, then the entry points'."""
    registry = Registry()
    where = f"HANDLER_TABLE={settings.handler_table}"
    table = _named_table(settings)(settings)
    if not isinstance(table, dict):
        raise HandlerTableNotFound(f"{where} returned {type(table).__name__}, not a table")
    try:
        registry.add_table(table)
    except (InvalidPattern, TypeError) as exc:
        raise HandlerTableNotFound(f"{where}: {exc}") from exc
    for entry in handler_entry_points():
        where = f"entry point {entry.name} ({entry.value}) in {ENTRY_POINT_GROUP}"
        try:
            register = entry.load()
        except (ImportError, AttributeError) as exc:
            raise HandlerTableNotFound(f"{where}: {exc}") from exc
        except Exception as exc:  # the package's own import failed: say which, in one line
            raise HandlerTableNotFound(f"{where}: {describe(exc)}") from exc
        if not callable(register):
            raise HandlerTableNotFound(f"{where}: {type(register).__name__} is not callable")
        try:
            register(registry, settings)
        except (InvalidPattern, TypeError) as exc:
            raise HandlerTableNotFound(f"{where}: {exc}") from exc
        except Exception as exc:
            raise HandlerTableNotFound(f"{where}: {describe(exc)}") from exc
    return registry.table()


def handler_entry_points() -> list[EntryPoint]:
    """The installed packages' handler entry points, by name (a stable order, whatever the
    order the packages were installed in)."""
    return sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda entry: entry.name)


def _named_table(settings: Settings) -> Callable[[Settings], object]:
    module_name, _, function_name = settings.handler_table.partition(":")
    try:
        return getattr(importlib.import_module(module_name), function_name)  # type: ignore[no-any-return]
    except (ImportError, AttributeError) as exc:
        raise HandlerTableNotFound(f"HANDLER_TABLE={settings.handler_table}: {exc}") from exc


def find_handler(
    table: Mapping[tuple[str, str], Handler], source: str, event_type: str
) -> Handler | None:
    return table.get((source, event_type))


def unhandled(source: str, event_type: str) -> str:
    """Why an event of a type no handler applies is skipped: the reason its row keeps,
    written alike by the workers and by the ingress (ingress/stored_only.py)."""
    return f"no handler for {source} {event_type}"
