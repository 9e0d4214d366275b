"""billing: accounts, the credit ledger and holds, packs, purchases, subscriptions

Revision ID: 0002_billing
Revises: 0001_webhook_events
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from domain.credits import CREDITS_DDL
from outbox.db import UTCDateTime

revision = "0002_billing"
down_revision = "0001_webhook_events"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("login", sa.String(255), nullable=True),
        sa.Column("kind", sa.String(32), nullable=True),
        sa.Column("stripe_customer_id", sa.String(255), nullable=True),
        sa.Column("customer_linked_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("stripe_customer_id", name="uq_accounts_stripe_customer_id"),
    )
    op.create_index("ix_accounts_login", "accounts", ["login"])

    op.create_table(
        "credit_ledger",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("account_id", sa.BigInteger(), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("amount", CREDITS_DDL, nullable=False),
        sa.Column("debt_change", CREDITS_DDL, nullable=False, server_default=sa.text("0")),
        sa.Column("reason", sa.String(255), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=True),
        sa.Column("job_id", sa.BigInteger(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("key", name="uq_credit_ledger_key"),
    )
    op.create_index("ix_credit_ledger_account", "credit_ledger", ["account_id", "id"])
    op.create_index("ix_credit_ledger_event", "credit_ledger", ["event_id"])
    op.create_index("ix_credit_ledger_job", "credit_ledger", ["job_id"])

    op.create_table(
        "credit_holds",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("account_id", sa.BigInteger(), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("amount", CREDITS_DDL, nullable=False),
        sa.Column("job_id", sa.BigInteger(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("released_at", UTCDateTime(), nullable=True),
        sa.Column("captured_at", UTCDateTime(), nullable=True),
        sa.Column("ledger_key", sa.String(255), nullable=True),
        sa.UniqueConstraint("key", name="uq_credit_holds_key"),
        sa.CheckConstraint("amount > 0", name="ck_credit_holds_amount_positive"),
    )
    op.create_index(
        "ix_credit_holds_open", "credit_holds", ["account_id", "released_at", "captured_at"]
    )

    op.create_table(
        "credit_packs",
        sa.Column("price_id", sa.String(255), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("credits", CREDITS_DDL, nullable=False),
        sa.Column("unit_amount", sa.Integer(), nullable=True),
        sa.Column("currency", sa.String(3), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )

    op.create_table(
        "credit_purchases",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("checkout_session_id", sa.String(255), nullable=False),
        sa.Column("account_id", sa.BigInteger(), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("description", sa.String(255), nullable=False),
        sa.Column("credits", CREDITS_DDL, nullable=False),
        sa.Column("payment_intent_id", sa.String(255), nullable=True),
        sa.Column("stripe_customer_id", sa.String(255), nullable=True),
        sa.Column("amount_total", sa.Integer(), nullable=True),
        sa.Column("currency", sa.String(3), nullable=True),
        sa.Column("refunded_amount", sa.Integer(), nullable=False),
        sa.Column("refunded_credits", CREDITS_DDL, nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("checkout_session_id", name="uq_credit_purchases_checkout_session"),
    )
    op.create_index(
        "ix_credit_purchases_payment_intent_id", "credit_purchases", ["payment_intent_id"]
    )
    op.create_index("ix_credit_purchases_event_id", "credit_purchases", ["event_id"])

    op.create_table(
        "subscriptions",
        sa.Column("id", sa.String(255), primary_key=True),
        sa.Column("account_id", sa.BigInteger(), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("stripe_customer_id", sa.String(255), nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("price_id", sa.String(255), nullable=True),
        sa.Column("current_period_end", UTCDateTime(), nullable=True),
        sa.Column("cancel_at_period_end", sa.Boolean(), nullable=False),
        sa.Column("past_due_since", UTCDateTime(), nullable=True),
        sa.Column("status_at", UTCDateTime(), nullable=False),
        sa.Column("details_at", UTCDateTime(), nullable=True),
        sa.Column("event_id", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_subscriptions_account_id", "subscriptions", ["account_id"])
    op.create_index("ix_subscriptions_event_id", "subscriptions", ["event_id"])


def downgrade() -> None:
    op.drop_table("subscriptions")
    op.drop_table("credit_purchases")
    op.drop_table("credit_packs")
    op.drop_table("credit_holds")
    op.drop_table("credit_ledger")
    op.drop_table("accounts")
