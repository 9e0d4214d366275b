"""The purge's reads of a partitioned Postgres, on a plain DBAPI connection (no SQLAlchemy,
like outbox/queries.py): which partitions a cut-off removes, what they hold, and the tables a
stopped purge left. outbox/retention.py finds leftovers with the same statement.

partitions_preview -- what a purge by partitions would remove and keep (queries.purge_preview)
"""

from __future__ import annotations

from datetime import datetime

from outbox.driver.dbapi import Connection, utc
from outbox.query_results import PartitionPreview, PurgePreview

#: A table's rows as the statistics estimate them; 0 for an empty file, and -1 (unknown)
#: for a table never analysed that holds something.
_ESTIMATE = (
    "CASE WHEN c.reltuples >= 0 THEN c.reltuples"
    " WHEN pg_relation_size(c.oid) = 0 THEN 0 ELSE -1 END"
)
#: The partitions entirely older than a cut-off (upper bound <= it; the default never,
#: the legacy one [MINVALUE, cutover) by its upper bound), oldest first, with the rows
#: the statistics estimate (_ESTIMATE). Bounds are read
#: from the catalog's expression of them: FROM ('…') TO ('…'), MINVALUE unquoted
#: (chr(39) is the quote).
REMOVABLE_PARTITIONS = (
    "SELECT name, estimate, lower_at, upper_at FROM ("
    f" SELECT c.relname AS name, {_ESTIMATE} AS estimate,"
    " CASE WHEN left(m.b[1], 1) = chr(39) THEN btrim(m.b[1], chr(39))::timestamptz END AS lower_at,"
    " CASE WHEN left(m.b[2], 1) = chr(39) THEN btrim(m.b[2], chr(39))::timestamptz END AS upper_at"
    " FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid,"
    " regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \\((.+)\\) TO \\((.+)\\)') AS m(b)"
    " WHERE i.inhparent = to_regclass('webhook_events')) p"
    " WHERE upper_at <= :cutoff ORDER BY upper_at"
)
#: Tables named like a partition of webhook_events but attached to nothing: partitions a
#: purge detached and did not get to drop (it stopped in between).
DETACHED_PARTITIONS = (
    f"SELECT c.relname AS name, {_ESTIMATE} AS estimate FROM pg_class c"
    " WHERE c.relkind = 'r' AND NOT c.relispartition"
    " AND c.relnamespace = (SELECT relnamespace FROM pg_class"
    " WHERE oid = to_regclass('webhook_events'))"
    " AND (c.relname ~ '^webhook_events_p[0-9]{8}(T[0-9]{2})?$'"
    " OR c.relname = 'webhook_events_legacy')"
    " ORDER BY c.relname"
)
#: The unfinished rows received before a moment, by partition and status: one SELECT per
#: status, each through that status's partial index (never a scan of a partition).
UNFINISHED_BY_PARTITION = (
    "SELECT tableoid::regclass::text AS partition, status, count(*) AS n FROM ("
    " SELECT tableoid, status FROM webhook_events"
    " WHERE status = 'pending' AND received_at < :before"
    " UNION ALL SELECT tableoid, status FROM webhook_events"
    " WHERE status = 'processing' AND received_at < :before"
    " UNION ALL SELECT tableoid, status FROM webhook_events"
    " WHERE status = 'dead' AND received_at < :before) u GROUP BY 1, 2"
)
#: Finished rows of the default partition received before a moment (few: the default
#: holds late rows and the unfinished rows moved out of removed partitions).
DEFAULT_FINISHED_BEFORE = (
    "SELECT count(*) FROM webhook_events_default"
    " WHERE received_at < :before AND status = ANY(:finished)"
)


def partitions_preview(db: Connection, cutoff: datetime, finished: list[str]) -> PurgePreview:
    """purge_preview on a partitioned Postgres: the partitions older than `cutoff` (rows
    estimated), the leftovers, the default's finished rows and the unfinished rows kept."""
    unfinished: dict[str, dict[str, int]] = {}
    for row in db.rows(UNFINISHED_BY_PARTITION, before=cutoff):
        unfinished.setdefault(row["partition"], {})[row["status"]] = int(row["n"])
    partitions = tuple(
        PartitionPreview(
            row["name"],
            utc(row["lower_at"]),
            utc(row["upper_at"]) or cutoff,
            int(row["estimate"]) if row["estimate"] >= 0 else None,
            unfinished.get(row["name"], {}),
        )
        for row in db.rows(REMOVABLE_PARTITIONS, cutoff=cutoff)
    )
    leftovers = db.rows(DETACHED_PARTITIONS)
    default_rows = int(db.value(DEFAULT_FINISHED_BEFORE, before=cutoff, finished=finished) or 0)
    removed = sum(max((p.estimated_rows or 0) - p.kept, 0) for p in partitions)
    removed += sum(max(int(row["estimate"]), 0) for row in leftovers)
    return PurgePreview(
        purgeable=removed + default_rows,
        unfinished_older=sum(n for counts in unfinished.values() for n in counts.values()),
        by_partitions=True,
        partitions=partitions,
        leftovers=tuple(row["name"] for row in leftovers),
        default_rows=default_rows,
    )
