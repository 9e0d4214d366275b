"""What an operator is looking for among the stored events (`--status`, `--source`,
`--type`, `--account`, `--since`, `--until`, `--delivery`), as the SQL condition the named
reads (outbox/queries.py) put in their `{where}`."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from outbox.states import Source, Status

#: The condition each field of an EventFilter adds when it is set; they all must hold.
#: Statuses are written out (see EventFilter.where); a delivery id is looked up through
#: the delivery index where there is one (ROW_KEY).
FILTER_CONDITIONS = {
    "sources": "source = ANY(:sources)",
    "event_type": "event_type LIKE :event_type ESCAPE '\\'",
    "account_id": "account_id = :account_id",
    "since": "received_at >= :since",
    "until": "received_at < :until",
    "delivery_id": "delivery_id = :delivery_id",
}
#: One row by its primary key (id, received_at), as the delivery index names it: the
#: received time, a parameter known when the statement is planned, prunes every partition
#: but the one that holds it.
ROW_KEY = "(id = :key_id{n} AND received_at = :key_received_at{n})"


@dataclass(frozen=True)
class EventFilter:
    """What an operator is looking for; every field left empty matches everything."""

    statuses: Collection[str] = ()
    sources: Collection[str] = ()
    #: An event type, `*` matching any run of characters ("invoice.*", "*.deleted").
    event_type: str | None = None
    account_id: int | None = None
    #: Received at or after / strictly before.
    since: datetime | None = None
    until: datetime | None = None
    delivery_id: str | None = None

    def where(
        self, *, delivery_keys: Sequence[tuple[int, datetime]] | None = None
    ) -> tuple[str, dict[str, Any]]:
        """The SQL condition for `{where}` and its parameters. `delivery_keys`: the rows
        (id, received_at) the delivery index gives the delivery id (queries.py looks them
        up first), which stand for its condition; None: the delivery id column is read."""
        conditions = [status_condition(self.statuses)] if self.statuses else []
        params: dict[str, Any] = {}
        if self.sources:
            params["sources"] = list(self.sources)
        if self.event_type:
            params["event_type"] = like_pattern(self.event_type)
        if self.account_id is not None:
            params["account_id"] = self.account_id
        if self.since is not None:
            params["since"] = self.since
        if self.until is not None:
            params["until"] = self.until
        if self.delivery_id:
            params["delivery_id"] = self.delivery_id
        conditions += [FILTER_CONDITIONS[name] for name in params]
        if self.delivery_id and delivery_keys is not None:
            conditions[-1] = keys_condition(delivery_keys, params)
            del params["delivery_id"]
        return " AND ".join(conditions) or "TRUE", params


def keys_condition(keys: Sequence[tuple[int, datetime]], params: dict[str, Any]) -> str:
    """Rows by their primary keys (ROW_KEY each, OR'd; FALSE for none), their parameters
    added to `params`."""
    for n, (event_id, received_at) in enumerate(keys):
        params[f"key_id{n}"], params[f"key_received_at{n}"] = event_id, received_at
    return (
        "(" + " OR ".join(ROW_KEY.format(n=n) for n in range(len(keys))) + ")" if keys else "FALSE"
    )


def status_condition(statuses: Collection[str]) -> str:
    """The statuses written out, one equality each, OR'd: Postgres can then read each
    status in play (pending, processing, dead) from its partial index, and OR their
    bitmaps; a list parameter would hide which ones are asked. A name that is no status
    matches nothing."""
    known = [s for s in dict.fromkeys(statuses) if s in STATUS_NAMES]
    return "(" + " OR ".join(f"status = '{s}'" for s in known) + ")" if known else "FALSE"


def source_list(sources: Collection[str]) -> str:
    """The sources as SQL literals (every source when none is given): the delivery index's
    primary key starts with the source, so each is one descent of it."""
    known = [s for s in dict.fromkeys(sources or SOURCE_NAMES) if s in SOURCE_NAMES]
    return ", ".join(f"'{s}'" for s in known) or "NULL"


STATUS_NAMES = frozenset(s.value for s in Status)
SOURCE_NAMES = tuple(s.value for s in Source)


def like_pattern(wildcard: str) -> str:
    """`*` becomes SQL's `%`; SQL's own `%` and `_` are matched literally."""
    escaped = wildcard.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%")
