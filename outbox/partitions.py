"""The time partitions of `webhook_events` on Postgres: which exist, and creating those ahead.

ensure_partitions -- create the missing partitions from the one holding now to `ahead` later
keep_partitions   -- the same on a connection of its own, at the current time
list_partitions   -- every partition with its bounds, read from the catalog
under_short_locks -- run a schema change under a short lock_timeout, retried (also migrations)

Partition names: `webhook_events_p<YYYYMMDD>` (an interval of whole days) or
`webhook_events_p<YYYYMMDD>T<HH>` (hours), after the lower bound in UTC; bounds are
multiples of the interval counted from the epoch, and are always read back from the
catalog, never from names. `webhook_events_default` takes a row no partition's range holds,
so an insert never fails for want of one; `webhook_events_legacy` is the single table of
before the online migration (MINVALUE up to its cutover).

Nothing here applies on SQLite, nor on a Postgres `webhook_events` not yet partitioned
(the online migration's middle step): both answer "nothing to do".
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from outbox.db import utcnow
from outbox.read_layout import partition_range

log = logging.getLogger("outbox.partitions")

PARENT = "webhook_events"
DEFAULT_PARTITION = "webhook_events_default"
LEGACY_PARTITION = "webhook_events_legacy"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: One key for every process's partition upkeep (pg_advisory_xact_lock): "outbox_pa".
ADVISORY_KEY = 0x6F7574626F785F70
#: How long a schema change may wait for its lock before giving up and trying again: an
#: ingress insert queued behind the waiting change waits at most this long.
LOCK_TIMEOUT_MS = 100
LOCK_ATTEMPTS = 20
LOCK_BACKOFF = 0.05  #: seconds before the second attempt, doubled up to a second

#: What the storage settings of the single table were (0001): set on each new partition,
#: since a partitioned parent holds none.
PARTITION_STORAGE = (
    "fillfactor = 85, autovacuum_vacuum_scale_factor = 0.01, autovacuum_analyze_scale_factor = 0.02"
)

T = TypeVar("T")


@dataclass(frozen=True)
class Partition:
    """One partition: its range [lower, upper) of received times; None is unbounded (the
    legacy partition's MINVALUE) and the default partition has neither."""

    name: str
    lower: datetime | None
    upper: datetime | None
    default: bool = False

    def overlaps(self, lower: datetime, upper: datetime) -> bool:
        if self.default:
            return False
        return (self.lower is None or self.lower < upper) and (
            self.upper is None or lower < self.upper
        )


def is_partitioned(conn: Connection) -> bool:
    """Whether `webhook_events` is a partitioned table (Postgres, past the migration's swap)."""
    if conn.dialect.name != "postgresql":
        return False
    found = conn.execute(
        text(
            "SELECT 1 FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid"
            " WHERE c.oid = to_regclass(:parent)"
        ),
        {"parent": PARENT},
    ).first()
    return found is not None


def list_partitions(conn: Connection) -> list[Partition]:
    """Every partition of webhook_events, oldest first and the default last ([] when the
    table is not partitioned)."""
    if not is_partitioned(conn):
        return []
    rows = conn.execute(
        text(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i"
            " JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass(:parent)"
        ),
        {"parent": PARENT},
    ).all()
    found = [_partition(name, bound) for name, bound in rows]
    return sorted(found, key=lambda p: (p.default, p.lower or datetime.min.replace(tzinfo=UTC)))


def _partition(name: str, bound: str) -> Partition:
    found = partition_range(name, bound)
    if found is None:
        return Partition(name, None, None, default=True)
    return Partition(name, *found)


def interval_start(moment: datetime, interval: timedelta) -> datetime:
    """The lower bound of the interval holding `moment`: a multiple of it from the epoch."""
    return EPOCH + ((moment - EPOCH) // interval) * interval


def partition_name(lower: datetime, interval: timedelta) -> str:
    whole_days = interval % timedelta(days=1) == timedelta(0)
    return f"{PARENT}_p{lower.astimezone(UTC).strftime('%Y%m%d' if whole_days else '%Y%m%dT%H')}"


def wanted_ranges(
    now: datetime, interval: timedelta, ahead: int
) -> list[tuple[datetime, datetime]]:
    """The ranges from the interval holding `now` through `ahead` intervals later."""
    start = interval_start(now, interval)
    return [(start + k * interval, start + (k + 1) * interval) for k in range(ahead + 1)]


def missing_ranges(
    partitions: list[Partition], now: datetime, interval: timedelta, ahead: int
) -> list[tuple[datetime, datetime]]:
    """The wanted ranges no partition covers any part of (one covering part of a range, made
    with another interval, is left as it is: ranges may not overlap)."""
    return [
        (lower, upper)
        for lower, upper in wanted_ranges(now, interval, ahead)
        if not any(p.overlaps(lower, upper) for p in partitions)
    ]


def ensure_partitions(
    conn: Connection, now: datetime, interval: timedelta, ahead: int
) -> list[str]:
    """Create the missing partitions from the one holding `now` through `ahead` intervals
    later; returns their names. `conn` must not be in a transaction: each attempt is one.

    Reads the catalog first and returns at once when nothing is missing. Two processes at
    once: the advisory lock makes the second wait, and it then finds nothing missing.
    """
    if not is_partitioned(conn):
        conn.rollback()
        return []
    missing = missing_ranges(list_partitions(conn), now, interval, ahead)
    conn.rollback()
    if not missing:
        return []

    def create() -> list[str]:
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_KEY})
        ranges = missing_ranges(list_partitions(conn), now, interval, ahead)
        return [create_partition(conn, lower, upper, interval) for lower, upper in ranges]

    created = under_short_locks(conn, create)
    if created:
        log.info("created partitions %s", ", ".join(created))
    return created


def create_partition(
    conn: Connection, lower: datetime, upper: datetime, interval: timedelta
) -> str:
    """Create the partition [lower, upper), in the caller's transaction. Rows of that range
    in the default partition (their partition was late) move into it."""
    name = partition_name(lower, interval)
    bounds = {"lower": lower, "upper": upper}
    has_default = conn.execute(text("SELECT to_regclass(:d) IS NOT NULL"), {"d": DEFAULT_PARTITION})
    strays = (
        has_default.scalar()
        and conn.execute(
            text(
                f"SELECT EXISTS (SELECT FROM {DEFAULT_PARTITION}"
                " WHERE received_at >= :lower AND received_at < :upper)"
            ),
            bounds,
        ).scalar()
    )
    if not strays:
        conn.execute(
            text(
                f"CREATE TABLE {name} PARTITION OF {PARENT}"
                f" FOR VALUES FROM ({_literal(conn, lower)}) TO ({_literal(conn, upper)})"
                f" WITH ({PARTITION_STORAGE})"
            )
        )
        return name
    # Attached, not created in place: creating it would find the default's rows of its
    # range and fail. The rows move in this transaction; the attach checks what it holds.
    conn.execute(
        text(
            f"CREATE TABLE {name} (LIKE {PARENT} INCLUDING DEFAULTS INCLUDING CONSTRAINTS"
            f" INCLUDING COMPRESSION) WITH ({PARTITION_STORAGE})"
        )
    )
    moved = conn.execute(
        text(
            f"WITH moved AS (DELETE FROM {DEFAULT_PARTITION}"
            " WHERE received_at >= :lower AND received_at < :upper RETURNING *)"
            f" INSERT INTO {name} SELECT * FROM moved"
        ),
        bounds,
    ).rowcount
    conn.execute(
        text(
            f"ALTER TABLE {PARENT} ATTACH PARTITION {name}"
            f" FOR VALUES FROM ({_literal(conn, lower)}) TO ({_literal(conn, upper)})"
        )
    )
    log.warning("partition %s was late: moved %d row(s) into it from the default", name, moved)
    return name


def _literal(conn: Connection, moment: datetime) -> str:
    # Partition bounds are DDL: no parameters, so the literal is made by the server.
    quoted = conn.execute(text("SELECT quote_literal(CAST(:m AS timestamptz))"), {"m": moment})
    return str(quoted.scalar())


def under_short_locks(conn: Connection, change: Callable[[], T]) -> T:
    """Run `change` under a short lock_timeout, again after a short backoff when a lock
    could not be had in time, so the ingress's inserts queued behind it wait little.

    Each attempt is a transaction of its own, or a savepoint when `conn` is in one already
    (a migration's): a savepoint rolled back gives up the locks taken since.
    """
    nested = conn.in_transaction()
    before = conn.execute(text("SHOW lock_timeout")).scalar() if nested else None
    delay = LOCK_BACKOFF
    for attempt in range(1, LOCK_ATTEMPTS + 1):
        try:
            with conn.begin_nested() if nested else conn.begin():
                conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT_MS}ms'"))
                result = change()
            if nested:
                conn.execute(text("SELECT set_config('lock_timeout', :v, true)"), {"v": before})
            return result
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) != "55P03" or attempt == LOCK_ATTEMPTS:
                raise
            log.info("schema change waited %d ms for a lock; again (%d)", LOCK_TIMEOUT_MS, attempt)
        time.sleep(delay)
        delay = min(delay * 2, 1.0)
    raise AssertionError("unreachable")


def keep_partitions(engine: Engine, interval: timedelta, ahead: int) -> list[str]:
    """ensure_partitions now, on a connection of `engine` (the sweeper, `outbox migrate`)."""
    if engine.dialect.name != "postgresql":
        return []
    with engine.connect() as conn:
        return ensure_partitions(conn, utcnow(), interval, ahead)
