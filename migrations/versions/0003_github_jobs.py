"""GitHub installations and their repositories, pull-request jobs, usage records

Revision ID: 0003_github_jobs
Revises: 0002_billing
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from outbox.db import UTCDateTime

revision = "0003_github_jobs"
down_revision = "0002_billing"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "installations",
        sa.Column("id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("account_login", sa.String(255), nullable=True),
        sa.Column("account_type", sa.String(32), nullable=True),
        sa.Column("app_id", sa.BigInteger(), nullable=True),
        sa.Column("repository_selection", sa.String(16), nullable=True),
        sa.Column("permissions", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("suspended_at", UTCDateTime(), nullable=True),
        sa.Column("deleted_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(
            "status IN ('active', 'suspended', 'deleted')", name="ck_installations_status"
        ),
    )
    op.create_index("ix_installations_account_id", "installations", ["account_id"])

    op.create_table(
        "installation_repositories",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column(
            "installation_id",
            sa.BigInteger(),
            sa.ForeignKey("installations.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("repository_id", sa.BigInteger(), nullable=False),
        sa.Column("full_name", sa.String(255), nullable=False),
        sa.Column("private", sa.Boolean(), nullable=True),
        sa.Column("added_at", UTCDateTime(), nullable=False),
        sa.Column("removed_at", UTCDateTime(), nullable=True),
        sa.Column("event_id", sa.BigInteger(), nullable=True),
        sa.UniqueConstraint(
            "installation_id", "repository_id", name="uq_installation_repositories_repo"
        ),
    )
    op.create_index(
        "ix_installation_repositories_installation_id",
        "installation_repositories",
        ["installation_id"],
    )

    op.create_table(
        "github_authorization_revocations",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.BigInteger(), nullable=True),
        sa.Column("login", sa.String(255), nullable=True),
        sa.Column("revoked_at", UTCDateTime(), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=True, unique=True),
    )
    op.create_index(
        "ix_github_authorization_revocations_user_id",
        "github_authorization_revocations",
        ["user_id"],
    )

    op.create_table(
        "pr_jobs",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(255), nullable=True, unique=True),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("installation_id", sa.BigInteger(), nullable=False),
        sa.Column("repository", sa.String(255), nullable=False),
        sa.Column("base_branch", sa.String(255), nullable=False),
        sa.Column("head_branch", sa.String(255), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("files", sa.JSON(), nullable=False),
        sa.Column("required_credits", sa.Numeric(18, 4), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_expires_at", UTCDateTime(), nullable=True),
        sa.Column("hold_key", sa.String(255), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("pr_number", sa.Integer(), nullable=True),
        sa.Column("pr_url", sa.String(512), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("validated_at", UTCDateTime(), nullable=True),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("event_id", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'validated', 'running', 'success', 'failed')",
            name="ck_pr_jobs_status",
        ),
        sa.CheckConstraint("required_credits >= 0", name="ck_pr_jobs_credits"),
    )
    op.create_index("ix_pr_jobs_account_id", "pr_jobs", ["account_id"])
    op.create_index("ix_pr_jobs_installation_id", "pr_jobs", ["installation_id"])
    op.create_index("ix_pr_jobs_event_id", "pr_jobs", ["event_id"])
    op.create_index(
        "ix_pr_jobs_due",
        "pr_jobs",
        ["next_attempt_at"],
        postgresql_where=sa.text("status IN ('pending', 'validated')"),
        sqlite_where=sa.text("status IN ('pending', 'validated')"),
    )
    op.create_index(
        "ix_pr_jobs_lease",
        "pr_jobs",
        ["lease_expires_at"],
        postgresql_where=sa.text("status = 'running'"),
        sqlite_where=sa.text("status = 'running'"),
    )

    op.create_table(
        "usage_records",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(255), nullable=False, unique=True),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("job_id", sa.BigInteger(), nullable=True, unique=True),
        sa.Column("quantity", sa.Numeric(18, 4), nullable=False),
        sa.Column("meter_event_name", sa.String(100), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("reported_at", UTCDateTime(), nullable=True),
        sa.Column("stripe_customer_id", sa.String(255), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_expires_at", UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("event_id", sa.BigInteger(), nullable=True),
    )
    op.create_index("ix_usage_records_account_id", "usage_records", ["account_id"])
    op.create_index("ix_usage_records_event_id", "usage_records", ["event_id"])
    op.create_index(
        "ix_usage_records_unreported",
        "usage_records",
        ["next_attempt_at"],
        postgresql_where=sa.text("reported_at IS NULL"),
        sqlite_where=sa.text("reported_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_table("usage_records")
    op.drop_table("pr_jobs")
    op.drop_table("github_authorization_revocations")
    op.drop_table("installation_repositories")
    op.drop_table("installations")
