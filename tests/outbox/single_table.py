"""The single webhook_events table of 0012, as the online migration's tests build and write it:
rows made in SQL (generate_series) with realistic columns and small bodies, and the INSERT
the code of 0012 stored each webhook with."""

from __future__ import annotations

import uuid

import psycopg

#: The 0012 code's statement: one row, kept once by the unique (source, delivery_id).
OLD_INSERT = (
    "INSERT INTO webhook_events (source, delivery_id, event_type, livemode, raw_body, headers,"
    " received_at, verified_by, backfilled, status, attempts, next_attempt_at)"
    " VALUES (%s, %s, 'push', NULL, %s, '{}', now(), 'github#0', false, 'pending', 0, now())"
    " ON CONFLICT (source, delivery_id) DO NOTHING RETURNING id"
)

#: `count` finished rows received over the last 30 days, ids in received order: GitHub
#: pushes and Stripe invoices, bodies of ~100 bytes, a failure logged for one in 100.
FILL = """
INSERT INTO webhook_events (source, delivery_id, event_type, livemode, installation_id,
    account_id, object_id, raw_body, headers, received_at, verified_by, backfilled, status,
    attempts, processed_at)
SELECT CASE WHEN n %% 3 = 0 THEN 'stripe' ELSE 'github' END,
       CASE WHEN n %% 3 = 0 THEN 'evt_' || md5(n::text) ELSE md5(n::text)::uuid::text END,
       CASE WHEN n %% 3 = 0 THEN 'invoice.paid' ELSE 'push' END,
       CASE WHEN n %% 3 = 0 THEN true END,
       CASE WHEN n %% 3 <> 0 THEN 1000 + n %% 500 END,
       100 + n %% 5000,
       CASE WHEN n %% 3 = 0 THEN 'sub_' || (n %% 9000)
            ELSE 'installation:' || (1000 + n %% 500) END,
       convert_to('{"id":"' || md5(n::text) || '","n":' || n || ',"ref":"refs/heads/main"}',
                  'UTF8'),
       '{"content-type": "application/json"}',
       now() - interval '30 days' + n * (interval '30 days' / %(count)s),
       'github#0', false,
       CASE WHEN n %% 50 = 0 THEN 'skipped' ELSE 'done' END,
       1,
       now() - interval '30 days' + n * (interval '30 days' / %(count)s) + interval '1 second'
FROM generate_series(1, %(count)s) AS n
"""
FAILURES = """
INSERT INTO webhook_event_failures (event_id, attempt, failed_at, error, outcome, worker)
SELECT id, 1, received_at, 'provider timed out', 'retry', 'w1' FROM webhook_events
WHERE id % 100 = 0
"""


def fill_single_table(conninfo: str, count: int) -> None:
    """`count` rows in a webhook_events at 0012, analysed."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(FILL, {"count": count})
        conn.execute(FAILURES)
        conn.execute("VACUUM ANALYZE webhook_events")


def insert_the_old_way(conn: psycopg.Connection, delivery: str | None = None) -> int | None:
    """One webhook stored by the 0012 code's INSERT; its id (None: a duplicate)."""
    row = conn.execute(
        OLD_INSERT, ("github", delivery or str(uuid.uuid4()), b'{"zen":"old"}')
    ).fetchone()
    return row[0] if row else None


def conninfo_of(url: str) -> str:
    """A libpq connection string from a SQLAlchemy URL."""
    return url.replace("postgresql+psycopg://", "postgresql://")
