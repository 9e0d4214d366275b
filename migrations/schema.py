"""Every module that declares tables, imported so that Base.metadata holds the whole schema.

Alembic's environment and the test fixtures import this; add a line when a package grows tables.
"""

import domain.accounts
import domain.disputes
import domain.installation_repositories
import domain.installations
import domain.jobs
import domain.ledger_tables
import domain.packs
import domain.purchases
import domain.subscriptions
import domain.usage  # noqa: F401
import outbox.models  # noqa: F401


def schema_filter(dialect: str):  # type: ignore[no-untyped-def]
    """Alembic's include_object for a database of `dialect`: what a comparison of the
    models with it looks at. A constraint or index declared for another dialect only
    (`ddl_if(dialect=…)`) is left out, and so are the partitions of webhook_events on
    Postgres (the parent stands for them: outbox/partitions.py)."""

    def include(obj, name, type_, reflected, compare_to):  # type: ignore[no-untyped-def]
        ddl_if = getattr(obj, "_ddl_if", None)
        if ddl_if is not None and ddl_if.dialect not in (None, dialect):
            return False
        return not (type_ == "table" and reflected and (name or "").startswith("webhook_events_"))

    return include
