"""disputes, 64-bit money amounts, exact credit columns everywhere

- `credit_disputes`: one row per Stripe dispute of a pack payment, and
  `credit_purchases.disputed_credits`, what its disputes hold taken back now;
- minor-unit amounts are 64-bit (`credit_purchases.amount_total`, `refunded_amount`,
  `credit_packs.unit_amount`): an order of 2,170,000,000 minor units (IDR) passes 2**31;
- `pr_jobs.required_credits` and `usage_records.quantity` use the credits type: unchanged
  on Postgres (NUMERIC(18, 4) already), integer ten-thousandths on SQLite, where a plain
  NUMERIC column kept binary floats. Their SQLite values are converted in place.

Revision ID: 0007_disputes_money_columns
Revises: 0006_ledger_debt_index
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from domain.credits import CREDITS_DDL, UNITS_PER_CREDIT
from outbox.db import UTCDateTime

revision = "0007_disputes_money_columns"
down_revision = "0006_ledger_debt_index"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

#: (table, column) of amounts in a currency's minor unit.
MINOR_UNIT_AMOUNTS = [
    ("credit_purchases", "amount_total"),
    ("credit_purchases", "refunded_amount"),
    ("credit_packs", "unit_amount"),
]
#: (table, column) of credits that were a plain NUMERIC(18, 4).
CREDIT_AMOUNTS = [("pr_jobs", "required_credits"), ("usage_records", "quantity")]


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for table, column in MINOR_UNIT_AMOUNTS:
        with op.batch_alter_table(table) as batch:
            batch.alter_column(column, type_=sa.BigInteger(), existing_type=sa.Integer())
    if sqlite:
        for table, column in CREDIT_AMOUNTS:
            op.execute(
                f"UPDATE {table} SET {column} = "
                f"CAST(ROUND({column} * {UNITS_PER_CREDIT}) AS INTEGER)"
            )
            with op.batch_alter_table(table) as batch:
                batch.alter_column(column, type_=sa.BigInteger(), existing_type=sa.Numeric(18, 4))
    op.add_column(
        "credit_purchases",
        sa.Column("disputed_credits", CREDITS_DDL, nullable=False, server_default=sa.text("0")),
    )
    op.create_table(
        "credit_disputes",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("dispute_id", sa.String(255), nullable=False),
        sa.Column(
            "purchase_id", sa.BigInteger(), sa.ForeignKey("credit_purchases.id"), nullable=False
        ),
        sa.Column("account_id", sa.BigInteger(), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("closed", sa.Boolean(), nullable=False),
        sa.Column("credits", CREDITS_DDL, nullable=False),
        sa.Column("taken", CREDITS_DDL, nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("dispute_id", name="uq_credit_disputes_dispute"),
    )
    op.create_index("ix_credit_disputes_event_id", "credit_disputes", ["event_id"])


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.drop_index("ix_credit_disputes_event_id", table_name="credit_disputes")
    op.drop_table("credit_disputes")
    with op.batch_alter_table("credit_purchases") as batch:
        batch.drop_column("disputed_credits")
    if sqlite:
        for table, column in CREDIT_AMOUNTS:
            with op.batch_alter_table(table) as batch:
                batch.alter_column(column, type_=sa.Numeric(18, 4), existing_type=sa.BigInteger())
            op.execute(f"UPDATE {table} SET {column} = {column} / {float(UNITS_PER_CREDIT)}")
    for table, column in MINOR_UNIT_AMOUNTS:
        with op.batch_alter_table(table) as batch:
            batch.alter_column(column, type_=sa.Integer(), existing_type=sa.BigInteger())
