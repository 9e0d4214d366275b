"""Millions of finished rows in the past, one statement a day, as bench/partitions.py needs
them: spread evenly over daily partitions ending yesterday, shaped as the mix leaves its
rows, and each delivery in the delivery index (webhook_deliveries) as the ingress puts it
there.

On a partitioned webhook_events the days' partitions are created first, named, bounded
and stored as outbox/partitions.py makes them, from the first filled day up to the first
partition the migration made ahead, so no row (filled now, or received during the run)
lands in the default partition. A new database's legacy partition (the single table of
before the migration, [MINVALUE, cutover)) is empty and would hold every past day: it is
detached and dropped first. On the one table of an older schema the rows go there, and
without a delivery index only webhook_events is filled.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg

#: One day of finished rows: 55 % GitHub deliveries (a random UUID each, the installation
#: and account of one of 500 accounts, six event types), the rest Stripe events of five
#: types (evt_ ids, an object id each); 90 % done, 10 % skipped; received evenly over
#: the day; small bodies (a finished row's body is never read again, and its partition is
#: dropped whole by the purge). The CTE also writes each delivery into the delivery index.
FILL_DAY = """
WITH r AS (
  SELECT g, github, account, received,
         CASE WHEN github THEN gen_random_uuid()::text
              ELSE 'evt_f' || %(tag)s || '_' || g END AS delivery
    FROM (SELECT g, random() < 0.55 AS github, 1 + (g::bigint * 7919) %% 500 AS account,
                 %(start)s::timestamptz + interval '1 day' * (g::float8 / %(rows)s) AS received
            FROM generate_series(0, %(rows)s - 1) AS g) AS numbered),
stored AS (
  INSERT INTO webhook_events (source, delivery_id, event_type, livemode, installation_id,
      account_id, object_id, provider_created_at, raw_body, headers, received_at, verified_by,
      backfilled, status, attempts, next_attempt_at, last_error, processed_at)
  SELECT CASE WHEN github THEN 'github' ELSE 'stripe' END, delivery,
         CASE WHEN github THEN (ARRAY['push', 'pull_request', 'issues', 'issue_comment',
                                      'check_run', 'installation_repositories'])[1 + g %% 6]
              ELSE (ARRAY['checkout.session.completed', 'customer.subscription.updated',
                          'invoice.paid', 'charge.refunded',
                          'payment_intent.succeeded'])[1 + g %% 5]
         END,
         CASE WHEN github THEN NULL ELSE false END,
         CASE WHEN github THEN 10000000 + account END, account,
         CASE WHEN github THEN NULL ELSE 'obj_f_' || (g %% 200000) END,
         received, '\\x7b7d'::bytea, '{}', received,
         CASE WHEN github THEN 'github#0' ELSE 'stripe#0' END, false,
         CASE WHEN g %% 10 = 0 THEN 'skipped' ELSE 'done' END, 1, NULL,
         CASE WHEN g %% 10 = 0 THEN 'no handler' END, received + interval '20 milliseconds'
    FROM r
  RETURNING source, delivery_id, id, received_at)
{deliveries}
"""
INTO_DELIVERIES = """INSERT INTO webhook_deliveries (source, delivery_id, event_id, received_at)
SELECT source, delivery_id, id, received_at FROM stored"""
NO_DELIVERIES = "SELECT count(*) FROM stored"

#: What the database is: a partitioned webhook_events, and a delivery index.
SCHEMA_FACTS = (
    "SELECT (SELECT relkind FROM pg_class WHERE oid = to_regclass('webhook_events')) = 'p',"
    " to_regclass('webhook_deliveries') IS NOT NULL"
)
#: A daily partition as outbox/partitions.py makes one (UTC midnights, its storage).
CREATE_DAY = (
    "CREATE TABLE IF NOT EXISTS {name} PARTITION OF webhook_events"
    " FOR VALUES FROM ('{lower}') TO ('{upper}') WITH ({storage})"
)
#: The partitions with a lower bound, as the catalog writes them.
BOUNDED_PARTITIONS = (
    "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i"
    " JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'webhook_events'::regclass"
)
#: Bytes on disk of webhook_events (every partition, with its indexes and TOAST), and of
#: the delivery index.
SIZES = (
    "SELECT coalesce((SELECT sum(pg_total_relation_size(relid))"
    " FROM pg_partition_tree('webhook_events')), pg_total_relation_size('webhook_events')),"
    " pg_total_relation_size(to_regclass('webhook_deliveries'))"
)


@dataclass(frozen=True)
class Filled:
    """What a fill put in: rows, of which skipped, days, seconds, and bytes on disk."""

    rows: int
    skipped: int
    days: int
    seconds: float
    partitioned: bool
    delivery_index: bool
    event_bytes: int
    delivery_bytes: int | None

    def size_per_million(self) -> str:
        per = 1_000_000 / max(1, self.rows)
        shown = f"webhook_events {self.event_bytes * per / 2**20:,.0f} MiB"
        if self.delivery_bytes is not None:
            shown += f" + webhook_deliveries {self.delivery_bytes * per / 2**20:,.0f} MiB"
        return shown + " per million rows (small bodies, indexes included)"


def day_partition(day: date) -> tuple[str, str, str]:
    """The name and UTC bounds of the daily partition of `day`."""
    from outbox.partitions import partition_name

    lower = datetime(day.year, day.month, day.day, tzinfo=UTC)
    upper = lower + timedelta(days=1)
    return partition_name(lower, timedelta(days=1)), lower.isoformat(), upper.isoformat()


def partition_days(conninfo: str, days: int) -> None:
    """On a partitioned webhook_events: daily partitions for the `days` days before today
    and up to the first one made ahead (make_days). Before anything is stored."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        partitioned, _ = conn.execute(SCHEMA_FACTS).fetchone()  # type: ignore[misc]
        if partitioned:
            make_days(conn, datetime.now(UTC).date() - timedelta(days=days))


def make_days(conn: psycopg.Connection[Any], first: date) -> None:
    """Daily partitions from `first` up to the first one made ahead; the empty legacy
    partition (MINVALUE up to the cutover) detached and dropped before."""
    from outbox.partitions import PARTITION_STORAGE

    lowers = []
    for name, bound in conn.execute(BOUNDED_PARTITIONS).fetchall():
        if "MINVALUE" in bound:
            if conn.execute(f"SELECT EXISTS (SELECT FROM {name})").fetchone() != (False,):
                raise RuntimeError(f"{name} holds rows: the fill wants a new database")
            conn.execute(f"ALTER TABLE webhook_events DETACH PARTITION {name}")
            conn.execute(f"DROP TABLE {name}")
        elif bound.startswith("FOR VALUES FROM ('"):
            lowers.append(datetime.fromisoformat(bound.split("'")[1]).date())
    day = first
    while day < (min(lowers) if lowers else datetime.now(UTC).date() + timedelta(days=1)):
        name, lower, upper = day_partition(day)
        conn.execute(CREATE_DAY.format(name=name, lower=lower, upper=upper,
                                       storage=PARTITION_STORAGE))  # type: ignore[arg-type]  # fmt: skip
        day += timedelta(days=1)


def fill(conninfo: str, rows: int, days: int, *, today: date | None = None) -> Filled:
    """`rows` finished rows over the `days` days before `today` (UTC), then VACUUM ANALYZE;
    their partitions made first if partition_days has not made them."""
    today = today or datetime.now(UTC).date()
    per_day = rows // days
    started = time.monotonic()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        partitioned, delivery_index = conn.execute(SCHEMA_FACTS).fetchone()  # type: ignore[misc]
        into = INTO_DELIVERIES if delivery_index else NO_DELIVERIES
        statement = FILL_DAY.replace("{deliveries}", into)
        if partitioned:
            make_days(conn, today - timedelta(days=days))
        for back in range(days, 0, -1):
            day = today - timedelta(days=back)
            _, lower, _ = day_partition(day)
            conn.execute(statement, {"tag": f"{day:%Y%m%d}", "start": lower, "rows": per_day})  # type: ignore[arg-type]
        conn.execute("VACUUM ANALYZE webhook_events")
        if delivery_index:
            conn.execute("VACUUM ANALYZE webhook_deliveries")
        event_bytes, delivery_bytes = conn.execute(SIZES).fetchone()  # type: ignore[misc]
    return Filled(
        rows=per_day * days,
        skipped=days * -(-per_day // 10),  # g % 10 = 0 for g in 0..per_day-1
        days=days,
        seconds=time.monotonic() - started,
        partitioned=bool(partitioned),
        delivery_index=bool(delivery_index),
        event_bytes=int(event_bytes or 0),
        delivery_bytes=int(delivery_bytes) if delivery_bytes is not None else None,
    )
