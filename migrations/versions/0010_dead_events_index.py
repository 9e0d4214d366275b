"""An index of the dead webhook events: (id) where status = 'dead'

The sweeper's `outbox_dead_events` gauge counts them at every scrape. Dead rows stay
until an operator replays them (purge keeps them), and no other index holds them by
status: counted through this partial index, the count costs the dead rows, not the table.

Revision ID: 0010_dead_events_index
Revises: 0009_interrupted_work
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_dead_events_index"
down_revision = "0009_interrupted_work"
branch_labels = None
depends_on = None

DEAD = sa.text("status = 'dead'")


def upgrade() -> None:
    op.create_index(
        "ix_webhook_events_dead",
        "webhook_events",
        ["id"],
        postgresql_where=DEAD,
        sqlite_where=DEAD,
    )


def downgrade() -> None:
    op.drop_index("ix_webhook_events_dead", table_name="webhook_events")
