"""The news a subscription and an installation are kept from, so any order gives one state

subscriptions: the deciding subscription object's status (`object_status`, its time is
`details_at`), when the first invoice was paid (`first_paid_at`), and the newest renewal
invoice's news (`invoice_status`, `invoice_at`); `status` is what they say together.
Rows already stored keep their status as their subscription object's (or, for a row only
invoices made, as the newest invoice's).

installations: GitHub's `created_at` and `updated_at` of the installation
(`github_created_at`, `github_updated_at`), which tell older news and a new installation
under a deleted one's id apart. Rows already stored have none until their next event.

Revision ID: 0008_ordering_news
Revises: 0006_ledger_debt_index
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from outbox.db import UTCDateTime

revision = "0008_ordering_news"
down_revision = "0007_disputes_money_columns"
branch_labels = None
depends_on = None

#: (name, type) of the new columns, all nullable.
SUBSCRIPTION_COLUMNS = (
    ("object_status", sa.String(32)),
    ("first_paid_at", UTCDateTime()),
    ("invoice_status", sa.String(32)),
    ("invoice_at", UTCDateTime()),
)
INSTALLATION_COLUMNS = (("github_created_at", UTCDateTime()), ("github_updated_at", UTCDateTime()))


def upgrade() -> None:
    with op.batch_alter_table("subscriptions") as batch:
        for name, type_ in SUBSCRIPTION_COLUMNS:
            batch.add_column(sa.Column(name, type_, nullable=True))
    with op.batch_alter_table("installations") as batch:
        for name, type_ in INSTALLATION_COLUMNS:
            batch.add_column(sa.Column(name, type_, nullable=True))
    # A row with details was last decided by a subscription object; one without only by
    # invoices: a paid one made it active, a failed renewal past due.
    op.execute("UPDATE subscriptions SET object_status = status WHERE details_at IS NOT NULL")
    op.execute(
        "UPDATE subscriptions SET invoice_at = status_at, invoice_status = CASE status "
        "WHEN 'active' THEN 'paid' ELSE 'payment_failed' END "
        "WHERE details_at IS NULL AND status IN ('active', 'past_due')"
    )


def downgrade() -> None:
    with op.batch_alter_table("installations") as batch:
        for name, _ in INSTALLATION_COLUMNS:
            batch.drop_column(name)
    with op.batch_alter_table("subscriptions") as batch:
        for name, _ in SUBSCRIPTION_COLUMNS:
            batch.drop_column(name)
