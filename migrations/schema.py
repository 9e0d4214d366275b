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
