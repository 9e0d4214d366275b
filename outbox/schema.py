"""Whether a database's schema is one this code runs on: at the migration head, or at
0013_delivery_index, the middle step of the online move to a partitioned webhook_events
(docs/partitions.md), so the new code serves while `outbox migrate` makes the swap.

At 0013 the delivery index is complete and kept, and webhook_events is still one table:
everything runs; partition upkeep has nothing to do, and `outbox doctor` says the move is
not finished. Any other revision is refused.

`outbox serve`, `outbox worker` and `outbox sweep` refuse to start on a database that is
not, and `/readyz` answers 503 with the reason, so an unmigrated database is named at
once instead of turning every webhook into a 503 with a log line about a missing table.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

MIGRATE_HINT = "run `outbox migrate`"
#: The revision before the head that this code also runs on (the online swap's start).
SERVING_BEFORE_HEAD = "0013_delivery_index"


@dataclass(frozen=True)
class SchemaState:
    """What the database says of its schema, against the heads this code ships."""

    #: The revisions recorded in the database's alembic_version (empty: never migrated).
    database: tuple[str, ...]
    #: The head revisions of this code's migrations.
    heads: tuple[str, ...]

    @property
    def at_head(self) -> bool:
        return set(self.database) == set(self.heads)

    @property
    def before_swap(self) -> bool:
        """At 0013: runnable, with the partitioning swap still to be made."""
        return set(self.database) == {SERVING_BEFORE_HEAD} and not self.at_head

    @property
    def problem(self) -> str | None:
        """One line for an operator when this code cannot run on the schema, else None."""
        if self.at_head or self.before_swap:
            return None
        if not self.database:
            return f"database not migrated: {MIGRATE_HINT}"
        known = set(self.database) <= set(known_revisions())
        where = ", ".join(sorted(self.database))
        if not known:
            return (
                f"database schema at {where}, which this code does not know "
                "(migrated by a newer release?)"
            )
        return (
            f"database schema at {where}, not at the migration head "
            f"{', '.join(self.heads)}: {MIGRATE_HINT}"
        )


@lru_cache(maxsize=1)
def code_heads() -> tuple[str, ...]:
    """The head revisions of the migrations shipped with this code (read once)."""
    return tuple(_script().get_heads())


@lru_cache(maxsize=1)
def known_revisions() -> frozenset[str]:
    return frozenset(rev.revision for rev in _script().walk_revisions())


def _script():  # type: ignore[no-untyped-def]
    from alembic.script import ScriptDirectory

    from outbox.migrate import alembic_config

    return ScriptDirectory.from_config(alembic_config("sqlite://"))


def database_revisions(conn: Connection) -> tuple[str, ...]:
    """The revisions alembic_version records; empty when the table does not exist (on
    Postgres that leaves `conn`'s transaction failed: the caller closes it)."""
    try:
        return tuple(conn.execute(text("SELECT version_num FROM alembic_version")).scalars())
    except DBAPIError as exc:
        if _missing_table(exc):
            return ()
        raise


def schema_state(engine: Engine) -> SchemaState:
    """Reads the database's revision (one query); raises if the database is unreachable."""
    with engine.connect() as conn:
        return SchemaState(database_revisions(conn), code_heads())


def _missing_table(exc: DBAPIError) -> bool:
    # SQLite: "no such table: alembic_version"; Postgres: SQLSTATE 42P01 undefined_table.
    return getattr(exc.orig, "sqlstate", None) == "42P01" or "no such table" in str(exc.orig)
