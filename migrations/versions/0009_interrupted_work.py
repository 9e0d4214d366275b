"""What an interrupted attempt leaves behind: webhook_events.interruptions, and the usage
records' identifier window (uncertain_since, needs_operator_at, resends)

- `webhook_events.interruptions`: how many times a worker died or lost its lease while the
  row was claimed. A row claimed with others is not charged an attempt for it (nobody
  knows which of them ran); once interrupted, it is applied alone, where it is.
- `usage_records.uncertain_since`: the first report attempt that got no definite answer
  from Stripe (it may have recorded the meter event); `needs_operator_at`: when the record
  stopped, its identifier window near its end; `resends`: how many times an operator had it
  sent again under a fresh identifier.

Revision ID: 0009_interrupted_work
Revises: 0006_ledger_debt_index
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from outbox.db import UTCDateTime

revision = "0009_interrupted_work"
down_revision = "0008_ordering_news"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_events") as batch:
        batch.add_column(
            sa.Column("interruptions", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )
    with op.batch_alter_table("usage_records") as batch:
        batch.add_column(sa.Column("uncertain_since", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("needs_operator_at", UTCDateTime(), nullable=True))
        batch.add_column(
            sa.Column("resends", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )


def downgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_column("resends")
        batch.drop_column("needs_operator_at")
        batch.drop_column("uncertain_since")
    with op.batch_alter_table("webhook_events") as batch:
        batch.drop_column("interruptions")
