"""Every module that declares tables, imported so that Base.metadata holds the whole schema.

Alembic's environment and the test fixtures import this; add a line when a package grows tables.
"""

import domain.accounts
import domain.ledger  # noqa: F401
import outbox.models  # noqa: F401
import domain.installations  # noqa: F401
import domain.jobs  # noqa: F401
import domain.usage  # noqa: F401
