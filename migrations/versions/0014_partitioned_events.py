"""webhook_events partitioned by received_at (Postgres): the online swap

The second step of the online move (docs/partitions.md), run while the code that writes
the delivery index serves (it runs at 0013 and at this head):

1. without a lock that stops inserts: a unique index (id, received_at) on the single
   table, built CONCURRENTLY, and CHECK (received_at < cutover), added NOT VALID then
   validated; `cutover` is the start of the partition interval after the one holding
   an hour from now;
2. one short transaction (a savepoint under a short lock_timeout, tried again while the
   table is busy): the single table becomes `webhook_events_legacy` (its indexes
   `…_legacy`, its primary key the index of step 1); a partitioned `webhook_events` with
   the same columns in the same order, its constraints and indexes, is made; the legacy
   table is attached as the partition [MINVALUE, cutover) (the CHECK spares the scan, its
   indexes are attached, not built); the partitions from the cutover and the default
   partition are made; the id sequence goes to the new table; the trigger goes.

SQLite: nothing (one table).

Downgrade is not supported: the rows received after the swap live in partitions that the
single table of 0013 could only take back by copying every one of them under a lock, which
is no online step; restore from a backup taken before the upgrade instead.

Revision ID: 0014_partitioned_events
Revises: 0013_delivery_index
Create Date: 2026-12-07
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from alembic import op

from outbox.db import utcnow
from outbox.partitions import (
    DEFAULT_PARTITION,
    LEGACY_PARTITION,
    PARENT,
    PARTITION_STORAGE,
    create_partition,
    interval_start,
    under_short_locks,
)
from outbox.settings import get_settings

revision = "0014_partitioned_events"
down_revision = "0013_delivery_index"
branch_labels = None
depends_on = None

KEY_INDEX = "webhook_events_id_received_at"
BEFORE_CUTOVER = "ck_webhook_events_before_cutover"
#: The indexes of the single table, made again on the partitioned parent.
INDEXES = {
    "ix_webhook_events_due": "(next_attempt_at, id) WHERE status = 'pending'",
    "ix_webhook_events_lease": "(lease_expires_at) WHERE status = 'processing'",
    "ix_webhook_events_in_line": (
        "(source, object_id) WHERE status IN ('pending', 'processing') AND object_id IS NOT NULL"
    ),
    "ix_webhook_events_dead": "(id) WHERE status = 'dead'",
    "ix_webhook_events_received_at": "(received_at)",
    "ix_webhook_events_account": "(account_id)",
}
CUTOVER_MARGIN = timedelta(hours=1)
STATUS_CHECK = "status IN ('pending', 'processing', 'done', 'dead', 'skipped')"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    settings = get_settings()
    interval, ahead = settings.partition_interval, settings.partitions_ahead
    # At least an hour away, so the swap's retries never run into it: a row received at
    # or after it could not go into the single table while the CHECK holds.
    cutover = interval_start(utcnow() + CUTOVER_MARGIN, interval) + interval
    bind = op.get_bind()
    with op.get_context().autocommit_block():
        _prepare_single_table(bind, cutover)
    under_short_locks(bind, lambda: _swap(bind, cutover, interval, ahead))


def _prepare_single_table(bind: sa.Connection, cutover: object) -> None:
    """Step 1, in autocommit: nothing here stops an insert for longer than a moment."""
    bind.exec_driver_sql(f"DROP INDEX CONCURRENTLY IF EXISTS {KEY_INDEX}")  # a failed try's
    bind.exec_driver_sql(
        f"CREATE UNIQUE INDEX CONCURRENTLY {KEY_INDEX} ON {PARENT} (id, received_at)"
    )
    bind.exec_driver_sql(f"ALTER TABLE {PARENT} DROP CONSTRAINT IF EXISTS {BEFORE_CUTOVER}")
    bind.execute(
        sa.text(
            f"ALTER TABLE {PARENT} ADD CONSTRAINT {BEFORE_CUTOVER}"
            f" CHECK (received_at < {_literal(bind, cutover)}) NOT VALID"
        )
    )
    bind.exec_driver_sql(f"ALTER TABLE {PARENT} VALIDATE CONSTRAINT {BEFORE_CUTOVER}")


def _swap(bind: sa.Connection, cutover: object, interval: timedelta, ahead: int) -> None:
    """Step 2, in one transaction: catalog changes only, no scan and no index build."""
    run = bind.exec_driver_sql
    run(f"LOCK TABLE {PARENT} IN ACCESS EXCLUSIVE MODE")
    run(f"DROP TRIGGER webhook_deliveries_index ON {PARENT}")
    run("DROP FUNCTION webhook_deliveries_index()")
    run(f"ALTER TABLE {PARENT} RENAME TO {LEGACY_PARTITION}")
    for index in INDEXES:
        run(f"ALTER INDEX {index} RENAME TO {index}_legacy")
    run(
        f"ALTER TABLE {LEGACY_PARTITION} DROP CONSTRAINT webhook_events_pkey,"
        f" DROP CONSTRAINT uq_webhook_events_source_delivery,"
        f" ADD CONSTRAINT {LEGACY_PARTITION}_pkey PRIMARY KEY USING INDEX {KEY_INDEX}"
    )
    # Same columns in the same order, so json_populate_recordset(NULL::webhook_events, …)
    # and prepared statements read the same row type; the id default is the sequence's.
    run(
        f"CREATE TABLE {PARENT} (LIKE {LEGACY_PARTITION} INCLUDING DEFAULTS"
        " INCLUDING COMPRESSION) PARTITION BY RANGE (received_at)"
    )
    run(
        f"ALTER TABLE {PARENT} ADD CONSTRAINT webhook_events_pkey PRIMARY KEY (id, received_at),"
        f" ADD CONSTRAINT ck_webhook_events_status CHECK ({STATUS_CHECK})"
    )
    for index, definition in INDEXES.items():
        run(f"CREATE INDEX {index} ON {PARENT} {definition}")
    run(f"ALTER TABLE {LEGACY_PARTITION} ALTER COLUMN id DROP DEFAULT")
    run(f"ALTER SEQUENCE webhook_events_id_seq OWNED BY {PARENT}.id")
    run(
        f"ALTER TABLE {PARENT} ATTACH PARTITION {LEGACY_PARTITION}"
        f" FOR VALUES FROM (MINVALUE) TO ({_literal(bind, cutover)})"
    )
    run(f"ALTER TABLE {LEGACY_PARTITION} DROP CONSTRAINT {BEFORE_CUTOVER}")
    for k in range(ahead):
        lower = cutover + k * interval  # type: ignore[operator]
        create_partition(bind, lower, lower + interval, interval)
    run(
        f"CREATE TABLE {DEFAULT_PARTITION} PARTITION OF {PARENT} DEFAULT WITH ({PARTITION_STORAGE})"
    )


def _literal(bind: sa.Connection, moment: object) -> str:
    quoted = bind.execute(sa.text("SELECT quote_literal(CAST(:m AS timestamptz))"), {"m": moment})
    return str(quoted.scalar())


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        raise NotImplementedError(
            "0014_partitioned_events cannot be undone in place: restore the backup taken "
            "before the upgrade (docs/partitions.md)"
        )
