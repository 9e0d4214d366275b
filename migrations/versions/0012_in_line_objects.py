"""ix_webhook_events_in_line holds only rows that name an object

The index answers one question: is another row of this object (source, object_id) still
pending or processing? A row without an object id is never asked about. Holding every
pending and processing row, it also matched what the claim, the sweeper's due rows and
the finishing statements look for (pending rows, processing rows), and whenever the
planner's statistics were taken while nothing was in play (a table of finished rows) it
took the index for empty and read all of it, every pending row with its heap tuple, at
each claim and each finishing statement, instead of walking the due index or looking the
rows up by id. Limited to rows with an object id, no statement but the object probe
implies its predicate.

Revision ID: 0012_in_line_objects
Revises: 0011_trace_parent
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_in_line_objects"
down_revision = "0011_trace_parent"
branch_labels = None
depends_on = None

IN_LINE = "status IN ('pending', 'processing')"
OBJECTS_IN_LINE = sa.text(f"{IN_LINE} AND object_id IS NOT NULL")


def _recreate(where: sa.TextClause) -> None:
    op.drop_index("ix_webhook_events_in_line", table_name="webhook_events")
    op.create_index(
        "ix_webhook_events_in_line",
        "webhook_events",
        ["source", "object_id"],
        postgresql_where=where,
        sqlite_where=where,
    )


def upgrade() -> None:
    _recreate(OBJECTS_IN_LINE)


def downgrade() -> None:
    _recreate(sa.text(IN_LINE))
