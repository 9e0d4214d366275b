"""webhook_events and its failure log

Revision ID: 0001_webhook_events
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from outbox.db import UTCDateTime

revision = "0001_webhook_events"
down_revision = None
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "webhook_events",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("delivery_id", sa.String(255), nullable=False),
        sa.Column("event_type", sa.String(255), nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=True),
        sa.Column("installation_id", sa.BigInteger(), nullable=True),
        sa.Column("stripe_account", sa.String(255), nullable=True),
        sa.Column("account_id", sa.BigInteger(), nullable=True),
        sa.Column("object_id", sa.String(255), nullable=True),
        sa.Column("provider_created_at", UTCDateTime(), nullable=True),
        sa.Column("hook_id", sa.String(64), nullable=True),
        sa.Column("api_version", sa.String(64), nullable=True),
        sa.Column("raw_body", sa.LargeBinary(), nullable=True),
        sa.Column("headers", sa.JSON(), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("verified_by", sa.String(64), nullable=True),
        sa.Column("backfilled", sa.Boolean(), nullable=False, server_default=sa.text("false")),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_expires_at", UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("processed_at", UTCDateTime(), nullable=True),
        sa.Column("purged_at", UTCDateTime(), nullable=True),
        sa.UniqueConstraint("source", "delivery_id", name="uq_webhook_events_source_delivery"),
        sa.CheckConstraint(
            "status IN ('pending', 'processing', 'done', 'dead', 'skipped')",
            name="ck_webhook_events_status",
        ),
    )
    op.create_index(
        "ix_webhook_events_due",
        "webhook_events",
        ["next_attempt_at"],
        postgresql_where=sa.text("status = 'pending'"),
        sqlite_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "ix_webhook_events_lease",
        "webhook_events",
        ["lease_expires_at"],
        postgresql_where=sa.text("status = 'processing'"),
        sqlite_where=sa.text("status = 'processing'"),
    )
    op.create_index(
        "ix_webhook_events_in_line",
        "webhook_events",
        ["source", "object_id"],
        postgresql_where=sa.text("status IN ('pending', 'processing')"),
        sqlite_where=sa.text("status IN ('pending', 'processing')"),
    )
    op.create_index("ix_webhook_events_received_at", "webhook_events", ["received_at"])
    op.create_index("ix_webhook_events_account", "webhook_events", ["account_id"])
    if op.get_bind().dialect.name == "postgresql":
        # Every row is updated a few times then left alone: vacuum early so the partial
        # indexes and the heap stay small, and leave room for HOT updates in each page.
        op.execute(
            "ALTER TABLE webhook_events SET (autovacuum_vacuum_scale_factor = 0.01, "
            "autovacuum_analyze_scale_factor = 0.02, fillfactor = 85)"
        )

    op.create_table(
        "webhook_event_failures",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column(
            "event_id",
            BigId,
            sa.ForeignKey("webhook_events.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("failed_at", UTCDateTime(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("worker", sa.String(64), nullable=True),
    )
    op.create_index("ix_webhook_event_failures_event_id", "webhook_event_failures", ["event_id"])


def downgrade() -> None:
    op.drop_table("webhook_event_failures")
    op.drop_table("webhook_events")
