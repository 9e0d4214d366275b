"""How `webhook_events` is laid out, as the operators' reads (outbox/queries.py) need to know:
its time partitions newest first with their bounds and row estimates, and whether the
delivery index (`webhook_deliveries`) is there to find a row by its delivery id.

Read from the catalog in one statement and kept on the connection for the rest of the
command. On SQLite, and on a Postgres `webhook_events` that is one table, the layout is a
single window holding every row; a SQLite database finds delivery ids through the unique
(source, delivery_id) index of webhook_events itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from outbox.driver.dbapi import Connection

#: What the table is, and whether the delivery index exists (relkind 'p': partitioned).
TABLE_FACTS = (
    "SELECT (SELECT relkind FROM pg_class WHERE oid = to_regclass('webhook_events'))"
    " AS relkind, to_regclass('webhook_deliveries') IS NOT NULL AS delivery_index"
)
#: Each partition of webhook_events: its name, its bound as Postgres writes it, and the
#: rows the statistics give it (live tuples counted as rows come and go, else the
#: planner's reltuples from the last ANALYZE; -1 there: never analysed).
PARTITIONS = (
    "SELECT c.relname AS name, pg_get_expr(c.relpartbound, c.oid) AS bound,"
    " coalesce(nullif(s.n_live_tup, 0), greatest(c.reltuples, 0))::bigint AS rows"
    " FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
    " LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid"
    " WHERE i.inhparent = 'webhook_events'::regclass"
)
#: The rows the statistics give the one table webhook_events.
TABLE_ROWS = (
    "SELECT coalesce(nullif(s.n_live_tup, 0), greatest(c.reltuples, 0))::bigint AS rows"
    " FROM pg_class c LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid"
    " WHERE c.oid = 'webhook_events'::regclass"
)

_RANGE = re.compile(r"FOR VALUES FROM \((.+)\) TO \((.+)\)")


@dataclass(frozen=True)
class Window:
    """Rows received in [lower, upper) held by one table (a partition, or all of them).

    None for a bound means unbounded; the default partition has no bounds at all.
    """

    table: str
    lower: datetime | None
    upper: datetime | None
    #: Rows by the statistics (Postgres), None where there are none (SQLite).
    estimated_rows: int | None = None
    default: bool = False

    def meets(self, since: datetime | None, until: datetime | None) -> bool:
        """Whether rows received in [since, until) may be here."""
        if self.default:
            return True
        after_since = since is None or self.upper is None or self.upper > since
        before_until = until is None or self.lower is None or self.lower < until
        return after_since and before_until


@dataclass(frozen=True)
class Layout:
    """The windows of webhook_events, the default partition first, then newest first."""

    partitioned: bool
    delivery_index: bool
    windows: tuple[Window, ...]

    @property
    def estimated_rows(self) -> int | None:
        counts = [w.estimated_rows for w in self.windows]
        return None if any(n is None for n in counts) else sum(n or 0 for n in counts)

    @property
    def named_partitions(self) -> int:
        return sum(1 for w in self.windows if not w.default) if self.partitioned else 0


def layout(db: Connection) -> Layout:
    """The table's layout, read once per connection."""
    found = db.memo.get("layout")
    if found is None:
        found = db.memo["layout"] = _read_layout(db)
    assert isinstance(found, Layout)
    return found


def _read_layout(db: Connection) -> Layout:
    if db.dialect == "sqlite":
        return Layout(False, False, (Window("webhook_events", None, None),))
    facts = db.first(TABLE_FACTS) or {}
    delivery_index = bool(facts.get("delivery_index"))
    if facts.get("relkind") != "p":
        rows = db.value(TABLE_ROWS)
        return Layout(False, delivery_index, (Window("webhook_events", None, None, rows),))
    windows = [_window(row["name"], row["bound"], int(row["rows"])) for row in db.rows(PARTITIONS)]
    windows.sort(key=lambda w: (not w.default, -(w.lower.timestamp() if w.lower else -1e12)))
    return Layout(True, delivery_index, tuple(windows))


def _window(name: str, bound: str, rows: int) -> Window:
    found = partition_range(name, bound)
    if found is None:
        return Window(name, None, None, rows, default=True)
    return Window(name, *found, rows)


def partition_range(name: str, bound: str) -> tuple[datetime | None, datetime | None] | None:
    """A partition's [lower, upper) from its bound as Postgres writes it
    (`pg_get_expr(relpartbound, oid)`): `FOR VALUES FROM (x) TO (y)` where x, y are quoted
    times or MINVALUE / MAXVALUE (None: unbounded); None for `DEFAULT`."""
    if bound.strip().upper() == "DEFAULT":
        return None
    matched = _RANGE.fullmatch(bound.strip())
    if matched is None:
        raise ValueError(f"partition {name} of webhook_events has an unexpected bound: {bound}")
    lower, upper = (_moment(text) for text in matched.groups())
    return lower, upper


def _moment(text: str) -> datetime | None:
    text = text.strip()
    if text.upper() in ("MINVALUE", "MAXVALUE"):
        return None
    return datetime.fromisoformat(text.strip("'")).astimezone(UTC)
