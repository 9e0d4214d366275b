"""The due-row index in claim order: (next_attempt_at, id) of pending rows

Claims ask for due rows ordered by (next_attempt_at, id). With the index on next_attempt_at
alone, Postgres read every due row, checked each against its object's queue and sorted
them all to keep a few: a claim cost grew with the backlog (about 19 ms for 5,000 due
rows). In claim order, the index is walked from the oldest row and the walk stops once
the claim has its rows.

Revision ID: 0004_due_index_order
Revises: 0003_github_jobs
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_due_index_order"
down_revision = "0003_github_jobs"
branch_labels = None
depends_on = None

PENDING = sa.text("status = 'pending'")


def upgrade() -> None:
    op.drop_index("ix_webhook_events_due", table_name="webhook_events")
    op.create_index(
        "ix_webhook_events_due",
        "webhook_events",
        ["next_attempt_at", "id"],
        postgresql_where=PENDING,
        sqlite_where=PENDING,
    )


def downgrade() -> None:
    op.drop_index("ix_webhook_events_due", table_name="webhook_events")
    op.create_index(
        "ix_webhook_events_due",
        "webhook_events",
        ["next_attempt_at"],
        postgresql_where=PENDING,
        sqlite_where=PENDING,
    )
