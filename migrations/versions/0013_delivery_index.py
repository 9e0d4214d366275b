"""webhook_deliveries, the delivery index; the failures' foreign key goes

The first step of the online move to a partitioned webhook_events (docs/partitions.md):
the code of before keeps running throughout.

Postgres:
- `webhook_deliveries` (source, delivery_id) -> (event_id, received_at), one row per
  delivery ever stored: "stored once" across time partitions, and the tombstone of a
  delivery whose partition was dropped;
- an AFTER INSERT trigger on webhook_events fills it for the rows the running code inserts,
  then a backfill from webhook_events in batches, each its own transaction;
- `webhook_event_failures.event_id` loses its foreign key (a partitioned table's id alone
  is not a key).

SQLite keeps one table and its unique (source, delivery_id): the delivery index is
created there (so every database has the models' tables) and stays empty; the failures'
foreign key goes there too (the table is copied).

Revision ID: 0013_delivery_index
Revises: 0012_in_line_objects
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from outbox.db import UTCDateTime
from outbox.partitions import under_short_locks

revision = "0013_delivery_index"
down_revision = "0012_in_line_objects"
branch_labels = None
depends_on = None

BACKFILL_BATCH = 100_000  #: ids a backfill transaction covers

INDEX_DELIVERY = """
CREATE FUNCTION webhook_deliveries_index() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_deliveries (source, delivery_id, event_id, received_at)
    VALUES (NEW.source, NEW.delivery_id, NEW.id, NEW.received_at) ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$
"""
TRIGGER = (
    "CREATE TRIGGER webhook_deliveries_index AFTER INSERT ON webhook_events"
    " FOR EACH ROW EXECUTE FUNCTION webhook_deliveries_index()"
)
BACKFILL = (
    "INSERT INTO webhook_deliveries (source, delivery_id, event_id, received_at)"
    " SELECT source, delivery_id, id, received_at FROM webhook_events"
    " WHERE id > :after AND id <= :up_to ON CONFLICT DO NOTHING"
)


def upgrade() -> None:
    op.create_table(
        "webhook_deliveries",
        sa.Column("source", sa.String(16), primary_key=True),
        sa.Column("delivery_id", sa.String(255), primary_key=True),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
    )
    if op.get_bind().dialect.name != "postgresql":
        _drop_failures_fk_on_sqlite()
        return
    bind = op.get_bind()
    op.execute(INDEX_DELIVERY)

    def expand() -> None:
        bind.exec_driver_sql(TRIGGER)
        bind.exec_driver_sql(
            "ALTER TABLE webhook_event_failures"
            " DROP CONSTRAINT webhook_event_failures_event_id_fkey"
        )

    under_short_locks(bind, expand)
    # Committed now, so every row inserted from here on is indexed by the trigger; the
    # rows before it are the backfill's, in batches of ids, each committed on its own.
    with op.get_context().autocommit_block():
        newest = bind.execute(sa.text("SELECT coalesce(max(id), 0) FROM webhook_events")).scalar()
        for after in range(0, int(newest or 0), BACKFILL_BATCH):
            bind.execute(sa.text(BACKFILL), {"after": after, "up_to": after + BACKFILL_BATCH})


def _drop_failures_fk_on_sqlite() -> None:
    # SQLite cannot drop a constraint: the table is made again without it.
    op.execute(
        "CREATE TABLE webhook_event_failures_new (id INTEGER NOT NULL PRIMARY KEY,"
        " event_id INTEGER NOT NULL, attempt INTEGER NOT NULL, failed_at DATETIME NOT NULL,"
        " error TEXT NOT NULL, outcome VARCHAR(16) NOT NULL, worker VARCHAR(64))"
    )
    op.execute(
        "INSERT INTO webhook_event_failures_new"
        " SELECT id, event_id, attempt, failed_at, error, outcome, worker"
        " FROM webhook_event_failures"
    )
    op.execute("DROP TABLE webhook_event_failures")
    op.execute("ALTER TABLE webhook_event_failures_new RENAME TO webhook_event_failures")
    op.create_index("ix_webhook_event_failures_event_id", "webhook_event_failures", ["event_id"])


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER webhook_deliveries_index ON webhook_events")
        op.execute("DROP FUNCTION webhook_deliveries_index()")
        op.create_foreign_key(
            "webhook_event_failures_event_id_fkey",
            "webhook_event_failures",
            "webhook_events",
            ["event_id"],
            ["id"],
            ondelete="CASCADE",
        )
    op.drop_table("webhook_deliveries")
