"""Reading a time-partitioned webhook_events one partition at a time: a listing, newest
first (walked_page), and the partitions that may hold an id (tables_bracketing).

One statement over the parent of a partitioned table plans every partition and, with a
filter no index serves (an event type, a finished status), may read all of them for a
rare match. Walked instead, partition by partition (outbox/read_layout.py's windows: the
default partition first, then newest first), each statement plans one partition and
stops at the page's LIMIT; the walk ends when the page is full, or when its time budget
has passed, and then says how far back it looked. Likewise a row by id is looked for in
the few partitions whose ids bracket it, found by halving.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from outbox.driver.dbapi import Connection
from outbox.read_layout import Window

#: The highest id a table (a partition) holds: one step down its primary key.
TOP_ID_IN = "SELECT max(id) FROM {table}"
#: How long a listing keeps walking older partitions for a full page before it answers
#: with what it found and how far back it looked: a filter no index serves (a type, a
#: finished status) would otherwise read every partition for a rare match.
LIST_SCAN_BUDGET = timedelta(milliseconds=100)


@dataclass(frozen=True)
class WalkedRows:
    """The first rows by id (highest first) a walk found, and how far back it looked."""

    rows: list[dict[str, Any]]
    complete: bool = True
    #: The oldest moment the walked partitions cover, when the walk stopped early.
    searched_since: datetime | None = None


def walked_page(
    db: Connection,
    windows: list[Window],
    list_sql: str,
    condition: str,
    params: dict[str, Any],
    *,
    wanted: int,
    budget: timedelta | None = None,
) -> WalkedRows:
    """The first `wanted` rows matching `condition`, by id, walking `windows` in order.

    :param list_sql: the listing statement, with `{table}`, `{where}`, `:limit`, `:offset`.
    """
    budget = LIST_SCAN_BUDGET if budget is None else budget
    found: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + budget.total_seconds()
    walked = 0
    for window in windows:
        sql = list_sql.format(table=quoted(window.table), where=condition)
        found.update((row["id"], row) for row in db.rows(sql, limit=wanted, offset=0, **params))
        walked += 1
        if len(found) >= wanted or time.monotonic() > deadline:
            break
    rest = windows[walked:]
    if rest and len(found) >= wanted:
        # Ids are taken just after received_at is stamped, not in its order: a row of the
        # next older partition, received moments before its bound, may carry a higher id.
        lowest = sorted(found, reverse=True)[wanted - 1]
        sql = list_sql.format(table=quoted(rest[0].table), where=condition + " AND id > :lowest")
        more = db.rows(sql, lowest=lowest, limit=wanted, offset=0, **params)
        found.update((row["id"], row) for row in more)
    rows = [found[i] for i in sorted(found, reverse=True)[:wanted]]
    if rest and len(found) < wanted:
        return WalkedRows(rows, complete=False, searched_since=walked_since(windows[:walked]))
    return WalkedRows(rows)


def walked_since(walked: list[Window]) -> datetime | None:
    """The oldest moment the walked partitions cover (the default one covers none)."""
    lowers = [w.lower for w in walked if not w.default and w.lower is not None]
    return min(lowers) if lowers else None


def tables_bracketing(db: Connection, windows: Sequence[Window], row_id: int) -> list[str]:
    """The default partition, the oldest partition whose highest id reaches `row_id`, and
    the next newer one (ids are taken just after the received time is stamped)."""
    named = [w for w in reversed(windows) if not w.default]  # oldest first
    tops: dict[int, int] = {}

    def top(i: int) -> int:  # an empty partition counts as the last one before it
        while i >= 0 and i not in tops:
            found = db.value(TOP_ID_IN.format(table=quoted(named[i].table)))
            if found is not None:
                tops[i] = int(found)
                break
            i -= 1
        return tops.get(i, 0) if i >= 0 else 0

    low, high = 0, len(named)
    while low < high:
        middle = (low + high) // 2
        if top(middle) >= row_id:
            high = middle
        else:
            low = middle + 1
    defaults = [w.table for w in windows if w.default]
    return defaults + [w.table for w in named[low : low + 2]]


def quoted(name: str) -> str:
    """A table's name as an SQL identifier (the names come from the catalog)."""
    return '"' + name.replace('"', '""') + '"'
