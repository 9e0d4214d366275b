"""ix_webhook_events_object: every row of an object, for the console's timeline

The operator console shows, beside one event, the other events of the same object
(source, object_id) in the order they were created. The only index on object_id holds the
rows still in line (ix_webhook_events_in_line), so finding an object's finished rows read
the whole table. This index holds every row that names an object, keyed by its id.

Postgres (webhook_events partitioned, docs/partitions.md), built without stopping inserts:
1. the parent's index `ON ONLY webhook_events`: catalog only, invalid until every
   partition has its own (a short lock, retried);
2. for each partition, its index built CONCURRENTLY (inserts into it continue);
3. in one short transaction (retried), each attached to the parent's: once the last is,
   Postgres marks the parent's index valid. A partition made meanwhile (PARTITION OF) gets
   its index from the parent's at once.
A run that stopped half way is taken up again: a partition whose index is attached is
left as it is, an unattached one left behind (perhaps invalid) is dropped and built again.

SQLite: a plain index (one table).

Revision ID: 0015_object_timeline
Revises: 0014_partitioned_events
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from outbox.partitions import PARENT, is_partitioned, under_short_locks

revision = "0015_object_timeline"
down_revision = "0014_partitioned_events"
branch_labels = None
depends_on = None

INDEX = "ix_webhook_events_object"
DEFINITION = "(source, object_id, id) WHERE object_id IS NOT NULL"
NAMES_AN_OBJECT = sa.text("object_id IS NOT NULL")

#: The partitions of webhook_events whose index is not yet attached to the parent's.
UNINDEXED_PARTITIONS = sa.text(
    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
    " WHERE i.inhparent = to_regclass(:parent) AND NOT EXISTS ("
    "   SELECT FROM pg_inherits ii JOIN pg_index x ON x.indexrelid = ii.inhrelid"
    "   WHERE ii.inhparent = to_regclass(:index) AND x.indrelid = c.oid)"
    " ORDER BY c.relname"
)


def upgrade() -> None:
    bind = op.get_bind()
    if not is_partitioned(bind):
        op.create_index(
            INDEX,
            PARENT,
            ["source", "object_id", "id"],
            postgresql_where=NAMES_AN_OBJECT,
            sqlite_where=NAMES_AN_OBJECT,
        )
        return
    under_short_locks(
        bind,
        lambda: bind.exec_driver_sql(
            f"CREATE INDEX IF NOT EXISTS {INDEX} ON ONLY {PARENT} {DEFINITION}"
        ),
    )
    with op.get_context().autocommit_block():
        for partition in _unindexed_partitions(bind):
            _build_partition_index(bind, partition)
    under_short_locks(bind, lambda: _attach_partition_indexes(bind))
    valid = bind.execute(
        sa.text("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:index)"),
        {"index": INDEX},
    ).scalar()
    if not valid:
        raise RuntimeError(f"{INDEX} is not valid: a partition's index is missing; run again")


def _unindexed_partitions(bind: sa.Connection) -> list[str]:
    found = bind.execute(UNINDEXED_PARTITIONS, {"parent": PARENT, "index": INDEX})
    return list(found.scalars())


def _build_partition_index(bind: sa.Connection, partition: str) -> None:
    """In autocommit: one partition's index, built without blocking its inserts."""
    if bind.execute(sa.text("SELECT to_regclass(:p) IS NULL"), {"p": partition}).scalar():
        return  # dropped since it was listed (a purge)
    bind.exec_driver_sql(f"DROP INDEX CONCURRENTLY IF EXISTS {_name(partition)}")  # a stopped run's
    bind.exec_driver_sql(
        f"CREATE INDEX CONCURRENTLY {_name(partition)} ON {partition} {DEFINITION}"
    )


def _attach_partition_indexes(bind: sa.Connection) -> None:
    """In one transaction: attach each built index to the parent's (catalog only)."""
    for partition in _unindexed_partitions(bind):
        name = _name(partition)
        if bind.execute(sa.text("SELECT to_regclass(:i) IS NOT NULL"), {"i": name}).scalar():
            bind.exec_driver_sql(f"ALTER INDEX {INDEX} ATTACH PARTITION {name}")


def _name(partition: str) -> str:
    return f"{partition}_object"


def downgrade() -> None:
    bind = op.get_bind()
    if not is_partitioned(bind):
        op.drop_index(INDEX, table_name=PARENT)
        return
    # A partitioned index cannot be dropped CONCURRENTLY; dropping it is catalog only.
    under_short_locks(bind, lambda: bind.exec_driver_sql(f"DROP INDEX {INDEX}"))
