"""ix_webhook_events_object: every row of an object, for the console's timeline

The operator console shows, beside one event, the other events of the same object
(source, object_id) in the order they were created. The only index on object_id holds the
rows still in line (ix_webhook_events_in_line), so finding an object's finished rows read
the whole table. This index holds every row that names an object, keyed by its id.

Revision ID: 0015_object_timeline
Revises: 0014_partitioned_events
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015_object_timeline"
down_revision = "0014_partitioned_events"
branch_labels = None
depends_on = None

NAMES_AN_OBJECT = sa.text("object_id IS NOT NULL")


def upgrade() -> None:
    op.create_index(
        "ix_webhook_events_object",
        "webhook_events",
        ["source", "object_id", "id"],
        postgresql_where=NAMES_AN_OBJECT,
        sqlite_where=NAMES_AN_OBJECT,
    )


def downgrade() -> None:
    op.drop_index("ix_webhook_events_object", table_name="webhook_events")
