"""An index of the ledger entries that changed a debt: (account_id) where debt_change <> 0

Every credit first pays the account's debt, which is the sum of its entries' debt
changes: read through the account's index, that sum visited every entry the account
ever had, so a grant's cost grew with the ledger (a batch of 50 grants spent ~4 ms of
server time on it once the accounts had ~50 entries each). Entries that touch a debt
(a refund beyond the balance, the credits that paid it back) are few: summed through
this partial index, the debt costs the same whatever the account's history.

Revision ID: 0006_ledger_debt_index
Revises: 0005_body_lz4
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_ledger_debt_index"
down_revision = "0005_body_lz4"
branch_labels = None
depends_on = None

HAS_DEBT_CHANGE = sa.text("debt_change <> 0")


def upgrade() -> None:
    op.create_index(
        "ix_credit_ledger_debt",
        "credit_ledger",
        ["account_id"],
        postgresql_where=HAS_DEBT_CHANGE,
        sqlite_where=HAS_DEBT_CHANGE,
    )


def downgrade() -> None:
    op.drop_index("ix_credit_ledger_debt", table_name="credit_ledger")
