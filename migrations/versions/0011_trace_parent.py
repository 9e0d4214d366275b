"""webhook_events.trace_parent: the W3C traceparent of the request that stored the row

With tracing on (outbox/tracing.py), the ingress keeps its request's trace context on the
row, and each worker's attempt at it joins that trace. Null when tracing is off.

Revision ID: 0011_trace_parent
Revises: 0010_dead_events_index
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_trace_parent"
down_revision = "0010_dead_events_index"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_events") as batch:
        batch.add_column(sa.Column("trace_parent", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("webhook_events") as batch:
        batch.drop_column("trace_parent")
