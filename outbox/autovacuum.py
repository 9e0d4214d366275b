"""Whether Postgres cleans up after the outbox: autovacuum on, for the server and its tables.

Every webhook's row is written three times (recorded, claimed, finished), so a busy outbox
leaves dead row versions as fast as it takes webhooks. Without autovacuum they pile up in
the table and in the partial indexes every claim walks, and each drain runs slower than
the one before (docs/deployment.md). `outbox doctor` says so; SQLite has no such process.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import Engine, text

#: What Postgres reads as false in a boolean storage parameter ("off", "no", "0", "f", and
#: every prefix of "false"; case does not matter).
_FALSE = re.compile(r"(f|fa|fal|fals|false|n|no|of|off|0)", re.IGNORECASE)

#: The server's two switches, and the storage parameters of this schema's tables.
_STATE = text(
    """
    SELECT current_setting('autovacuum') AS autovacuum,
           current_setting('track_counts') AS track_counts,
           ARRAY(
               SELECT c.relname || ' ' || split_part(option, '=', 2)
               FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
               CROSS JOIN LATERAL unnest(c.reloptions) AS option
               WHERE n.nspname = current_schema()
                 AND c.relkind IN ('r', 'p')
                 AND option ILIKE 'autovacuum\\_enabled=%'
           ) AS table_options
    """
)


@dataclass(frozen=True)
class AutovacuumState:
    """The server's settings and the tables that switched autovacuum off for themselves."""

    server_on: bool
    #: Autovacuum only starts on tables whose activity is counted.
    track_counts: bool
    tables_off: tuple[str, ...]

    @property
    def problem(self) -> str | None:
        """One line for an operator when dead rows will not be cleaned, else None."""
        if not self.server_on:
            return "the server runs with autovacuum = off"
        if not self.track_counts:
            return "the server runs with track_counts = off, so autovacuum never starts"
        if self.tables_off:
            return f"autovacuum_enabled = false on {', '.join(self.tables_off)}"
        return None


def is_off(setting: str) -> bool:
    return _FALSE.fullmatch(setting.strip()) is not None


def autovacuum_state(engine: Engine) -> AutovacuumState | None:
    """The Postgres server's autovacuum state (one query); None on SQLite."""
    if engine.dialect.name != "postgresql":
        return None
    with engine.connect() as conn:
        row = conn.execute(_STATE).one()
    options = (entry.rpartition(" ") for entry in row.table_options)
    tables = sorted(name for name, _, value in options if is_off(value))
    return AutovacuumState(not is_off(row.autovacuum), not is_off(row.track_counts), tuple(tables))
