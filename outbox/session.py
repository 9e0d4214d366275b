"""The session as the domain works with it: what its tables are made of, and the statements
a handler runs on the session it is given beyond SQLAlchemy's own.

- `Base`, the declarative base every table derives from (one metadata: the migrations
  create the outbox's tables and the domain's together); `UTCDateTime` and `BigId`, the
  column types that read and write alike on Postgres and SQLite (an aware UTC time; a
  64-bit id that is SQLite's rowid there).
- `Query`, a named statement built once per dialect, whose `one_of` (`OneOf`) takes a
  list as one parameter: a batch's reads, many events' rows in one statement.
- `insert_all` and `write_over`: a batch's new rows of one table, and its mapped rows
  changed in memory written over theirs, each in one statement.

The session itself is SQLAlchemy's, in the transaction the processors opened for a batch
(outbox/handling.py); these run in that transaction, on Postgres as the driver layer
sends them (outbox/driver/), on SQLite through the session. The domain imports them from
here, never from the driver layer (tests/test_layers.py), so that layer may change under
them.
"""

from __future__ import annotations

from outbox.db import Base, UTCDateTime
from outbox.driver.batch_writes import insert_all, write_over
from outbox.driver.statements import OneOf, Query
from outbox.models import BigId

__all__ = [
    "Base",
    "BigId",
    "OneOf",
    "Query",
    "UTCDateTime",
    "insert_all",
    "write_over",
]
