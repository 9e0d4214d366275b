"""Retention by whole partitions (Postgres): what `outbox purge --older-than` does there.

purge_by_partitions  -- remove what is older than a cut-off: leftovers, partitions, default rows
detach_partition     -- detach a partition and move its unfinished rows to the default partition
drop_detached        -- delete a detached partition's failures and drop it; its rows counted
delete_old_finished  -- one bounded batch of the default partition's old finished rows

A partition goes when its upper bound is at or before the cut-off (the legacy partition
[MINVALUE, cutover) too, by its upper bound; the default partition never). Its pending,
processing and dead rows are kept: moved, with their ids, leases and every column, into
the parent in the transaction that detaches it (they land in the default partition), so a
worker finishing a row by id finds it throughout. Its failures go with it; the delivery
index (webhook_deliveries) keeps every delivery, the tombstone a late duplicate is told by.

A purge that stops between the detach and the drop leaves a detached table named like a
partition: the next purge drops it first (partition_reads.DETACHED_PARTITIONS finds it; `outbox
doctor` reports it). Two purges at once take turns (a session advisory lock).

Nothing here applies on SQLite or on an unpartitioned Postgres (operator_writes.purge).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, Engine, text

from outbox.models import FINISHED, Status, WebhookEvent
from outbox.partition_reads import DETACHED_PARTITIONS
from outbox.partitions import DEFAULT_PARTITION, PARENT, list_partitions, under_short_locks

log = logging.getLogger("outbox.retention")

#: One key for every process's purge (pg_advisory_lock): "outbox_r".
PURGE_KEY = 0x6F7574626F785F72
#: The statuses a removed partition's rows are kept in: not finished, still to be applied
#: or replayed.
KEPT = (Status.PENDING, Status.PROCESSING, Status.DEAD)

_COLUMNS = ", ".join(c.name for c in WebhookEvent.__table__.columns)
_FINISHED = ", ".join(f"'{s.value}'" for s in FINISHED)


@dataclass(frozen=True)
class RemovedPartition:
    """A partition removed: its rows dropped with it and its unfinished rows kept (moved)."""

    name: str
    rows: int
    moved: dict[str, int]
    failures: int

    @property
    def kept(self) -> int:
        return sum(self.moved.values())


@dataclass
class Retention:
    """What a purge by partitions did."""

    partitions: list[RemovedPartition] = field(default_factory=list)
    #: Partitions an earlier purge had detached and not dropped, dropped by this one.
    leftovers: list[RemovedPartition] = field(default_factory=list)
    #: Finished rows of the default partition older than the cut-off, deleted in batches.
    default_rows: int = 0

    @property
    def rows(self) -> int:
        return sum(p.rows for p in self.partitions + self.leftovers) + self.default_rows

    @property
    def kept(self) -> int:
        return sum(p.kept for p in self.partitions)


def purge_by_partitions(
    engine: Engine,
    cutoff: datetime,
    *,
    batch: int,
    on_removed: Callable[[RemovedPartition], None] | None = None,
) -> Retention:
    """Remove every partition whose rows are all older than `cutoff`, oldest first, then
    the default partition's finished rows older than it, `batch` rows a transaction.

    Leftover detached partitions are dropped first. One purge at a time: a second waits
    for the first, then finds what is left.
    """
    done = Retention()
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": PURGE_KEY})
        conn.commit()
        try:
            for name in _detached_names(conn):
                removed = drop_detached(conn, name, None)
                done.leftovers.append(removed)
                _told(on_removed, removed)
            for name in _removable_names(conn, cutoff):
                moved = detach_partition(conn, name)
                removed = drop_detached(conn, name, moved)
                done.partitions.append(removed)
                _told(on_removed, removed)
            while True:
                with conn.begin():
                    deleted = delete_old_finished(conn, cutoff, batch)
                done.default_rows += deleted
                if deleted < batch:
                    break
        finally:
            conn.rollback()
            conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": PURGE_KEY})
            conn.commit()
    return done


def _told(on_removed: Callable[[RemovedPartition], None] | None, removed: RemovedPartition) -> None:
    log.info("partition %s removed: %d row(s), %d kept", removed.name, removed.rows, removed.kept)
    if on_removed is not None:
        on_removed(removed)


def _detached_names(conn: Connection) -> list[str]:
    with conn.begin():
        return [str(name) for name, _ in conn.execute(text(DETACHED_PARTITIONS))]


def _removable_names(conn: Connection, cutoff: datetime) -> list[str]:
    """The partitions whose every row is older than `cutoff` (upper bound at or before it;
    the legacy one [MINVALUE, cutover) too, the default never), oldest first."""
    with conn.begin():
        removable = [p for p in list_partitions(conn) if p.upper is not None and p.upper <= cutoff]
    return [p.name for p in sorted(removable, key=lambda p: p.upper or cutoff)]


def detach_partition(conn: Connection, name: str) -> dict[str, int]:
    """Detach partition `name` and move its pending, processing and dead rows into the
    parent (the default partition takes them), in one transaction under short lock
    timeouts; how many of each status moved. `conn` must not be in a transaction.

    Not DETACH CONCURRENTLY: Postgres refuses it while a default partition exists. The
    lock on the parent is held for the detach and the move of the few unfinished rows;
    an insert waiting on it waits at most the lock timeout before this gives way.
    """
    table = _identifier(name)

    def detach() -> dict[str, int]:
        conn.execute(text(f"ALTER TABLE {PARENT} DETACH PARTITION {table}"))
        # The partial indexes find the unfinished rows: never a scan of the partition.
        conn.execute(text("SET LOCAL enable_seqscan = off"))
        moved = conn.execute(text(_move_statement(table))).scalars()
        return dict(Counter(str(status) for status in moved))

    return under_short_locks(conn, detach)


def _move_statement(table: str) -> str:
    """One DELETE per kept status from the detached table, each through that status's
    partial index, inserted into the parent with every column as it was."""
    taken = ", ".join(
        f"{s.value} AS (DELETE FROM {table} WHERE status = '{s.value}' RETURNING {_COLUMNS})"
        for s in KEPT
    )
    rows = " UNION ALL ".join(f"SELECT {_COLUMNS} FROM {s.value}" for s in KEPT)
    return f"WITH {taken} INSERT INTO {PARENT} ({_COLUMNS}) {rows} RETURNING status"


def drop_detached(conn: Connection, name: str, moved: dict[str, int] | None) -> RemovedPartition:
    """Delete the failures of detached table `name`'s rows and drop it, in one transaction
    holding no lock on the parent; its rows are counted first. `moved`: its unfinished
    rows, moved by detach_partition; None for a table found detached (a leftover), whose
    unfinished rows, if any, are moved now (a table detached by hand may hold some).

    The failures are found from their event_id index over the table's id range, each
    probed in the table's primary key: never a scan of the table for them.
    """
    table = _identifier(name)
    with conn.begin():
        if moved is None:
            conn.execute(text("SET LOCAL enable_seqscan = off"))
            statuses = conn.execute(text(_move_statement(table))).scalars()
            moved = dict(Counter(str(status) for status in statuses))
            conn.execute(text("RESET enable_seqscan"))
        rows = int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
        failures = conn.execute(
            text(
                "DELETE FROM webhook_event_failures f"
                f" WHERE f.event_id BETWEEN (SELECT min(id) FROM {table})"
                f" AND (SELECT max(id) FROM {table})"
                f" AND EXISTS (SELECT FROM {table} p WHERE p.id = f.event_id)"
            )
        ).rowcount
        conn.execute(text(f"DROP TABLE {table}"))
    return RemovedPartition(name, rows, moved, failures)


def delete_old_finished(conn: Connection, cutoff: datetime, limit: int) -> int:
    """Delete at most `limit` finished rows of the default partition received before
    `cutoff`, with their failures, in the caller's transaction; how many went. Their
    delivery index rows stay (the tombstones)."""
    return int(
        conn.execute(
            text(
                f"WITH batch AS (SELECT id FROM {DEFAULT_PARTITION}"
                f" WHERE received_at < :cutoff AND status IN ({_FINISHED})"
                " ORDER BY received_at LIMIT :limit),"
                f" gone AS (DELETE FROM {DEFAULT_PARTITION} e USING batch WHERE e.id = batch.id"
                # Checked again on the row deleted: a replay may have changed it meanwhile.
                f" AND e.received_at < :cutoff AND e.status IN ({_FINISHED}) RETURNING e.id),"
                " failures AS (DELETE FROM webhook_event_failures f USING gone"
                " WHERE f.event_id = gone.id)"
                " SELECT count(*) FROM gone"
            ),
            {"cutoff": cutoff, "limit": limit},
        ).scalar_one()
    )


def _identifier(name: str) -> str:
    """A partition's name as SQL: names come from the catalog, and are checked all the same."""
    if not name.replace("_", "").isalnum() or not name.startswith(f"{PARENT}_"):
        raise ValueError(f"not a partition name: {name!r}")
    return f'"{name}"'
