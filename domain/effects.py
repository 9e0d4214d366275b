"""What one webhook event produced: the rows of every effect table that name it.

Every table that records an effect of a webhook carries `event_id` (the webhook_events.id
it came from). Each such table is wired into EFFECT_FINDERS with one line: its module's own
`effects_of_event`, or `rows_naming_event(Model)` for all of a model's columns.

`outbox events show` lists these effects, and `outbox events replay --dry-run` uses them
to say which effects are already applied (the domain's idempotency keys and lookups make
a replay skip them, never double them).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import inspect, select
from sqlalchemy.orm import Session

from domain import balances, disputes, installations, jobs, purchases, subscriptions, usage

#: `finder(session, event_id)` -> the effect rows of that event, as plain dicts.
EffectFinder = Callable[[Session, int], list[dict[str, Any]]]

#: Effect kind (the table's name) -> its finder: one line per effect table.
EFFECT_FINDERS: dict[str, EffectFinder] = {
    "credit_ledger": balances.effects_of_event,
    "credit_purchases": purchases.effects_of_event,
    "credit_disputes": disputes.effects_of_event,
    "subscriptions": subscriptions.effects_of_event,
    "installations": installations.effects_of_event,  # and their repositories, revocations
    "pr_jobs": jobs.effects_of_event,
    "usage_records": usage.effects_of_event,
}


def rows_naming_event(model: Any) -> EffectFinder:
    """A finder for a mapped class whose table has an `event_id` column: all its columns."""
    columns = [c.key for c in inspect(model).column_attrs]
    if "event_id" not in columns:
        raise TypeError(f"{model.__name__} has no event_id column to find effects by")

    def find(session: Session, event_id: int) -> list[dict[str, Any]]:
        rows = session.scalars(
            select(model).where(model.event_id == event_id).order_by(*inspect(model).primary_key)
        )
        return [{name: _plain(getattr(row, name)) for name in columns} for row in rows]

    return find


def effects_of_event(session: Session, event_id: int) -> list[dict[str, Any]]:
    """Every effect row of `event_id`, each with its `kind` (its table), finder by finder.

    A finder may name each row's table itself (`"table": …`, when it covers several).
    """
    effects: list[dict[str, Any]] = []
    for name in sorted(EFFECT_FINDERS):
        for row in EFFECT_FINDERS[name](session, event_id):
            fields = dict(row)
            kind = fields.pop("table", name)
            effects.append({"kind": kind, **{k: _plain(v) for k, v in fields.items()}})
    return effects


def _plain(value: Any) -> Any:
    """JSON-friendly, exact: decimals as strings (money never goes through a float)."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value
