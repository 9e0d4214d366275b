"""What the storage tests share: a lease, a retry policy, claims in their own transaction,
a row read back, and the plan of a driver statement."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import text, update

from outbox import claiming
from outbox.db import transaction, utcnow
from outbox.models import Status, WebhookEvent
from outbox.retry import RetryPolicy
from tests.factories import incoming, record

LEASE = timedelta(minutes=5)
THREE_TRIES = RetryPolicy(base_seconds=10, max_delay_seconds=100, max_attempts=3, jitter=0)


def claim(sessions, **kwargs):
    kwargs.setdefault("now", utcnow())
    with transaction(sessions) as session:
        return claiming.claim(session, lease=LEASE, **kwargs)


def row(sessions, event_id: int) -> WebhookEvent:
    with sessions() as session:
        return session.get_one(WebhookEvent, event_id)


def claim_for_pass(sessions, **kwargs):
    kwargs.setdefault("now", utcnow())
    with transaction(sessions) as session:
        return claiming.claim_for_pass(session, lease=LEASE, **kwargs)


def plan_of(session, statement, params) -> str:
    """EXPLAIN of a storage statement (outbox.driver.statements.Query) in `session`'s
    transaction."""
    from outbox.driver.prepared import postgres_text

    dialect = session.get_bind().dialect
    sql, _ = postgres_text(statement.statement(dialect.name), dialect)
    cursor = session.connection().connection.driver_connection.cursor()
    cursor.execute("EXPLAIN " + sql, params)
    return "\n".join(row[0] for row in cursor.fetchall())


def rows_in_play_the_statistics_never_saw(engine, sessions, *, finished: int, pending: int):
    """`finished` rows finished and analysed (the planner's view of a table at rest), then
    `pending` rows of as many objects stored after it; their ids."""
    record(engine, *(incoming(f"evt_old_{n}") for n in range(finished)))
    with transaction(sessions) as session:
        session.execute(update(WebhookEvent).values(status=Status.DONE.value, next_attempt_at=None))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE webhook_events"))
    new = [incoming(f"evt_new_{n}", object_id=f"obj_{n}") for n in range(pending)]
    return [r.id for r in record(engine, *new)]


def where_rows_are_now(session) -> tuple[str, dict[str, str]]:
    """The table rows received now are stored in (a partition of webhook_events on
    Postgres), and each index of webhook_events by its name on that table: a plan names
    the partition's own table and indexes."""
    from outbox.partitions import list_partitions

    conn = session.connection()
    now = utcnow()
    held = [
        p
        for p in list_partitions(conn)
        if not p.default
        and (p.lower is None or p.lower <= now)
        and (p.upper is None or now < p.upper)
    ]
    if not held:
        return "webhook_events", {}
    table = held[0].name
    found = conn.execute(
        text(
            "SELECT parent.relname, child.relname FROM pg_inherits i"
            " JOIN pg_class child ON child.oid = i.inhrelid"
            " JOIN pg_class parent ON parent.oid = i.inhparent"
            " JOIN pg_index x ON x.indexrelid = child.oid"
            " WHERE x.indrelid = to_regclass(:table)"
        ),
        {"table": table},
    ).all()
    return table, dict(found)


def tables_holding_rows(conn) -> set[str]:
    """The tables the rows of webhook_events are in: itself, or some of its partitions."""
    found = conn.execute(text("SELECT DISTINCT tableoid::regclass::text FROM webhook_events"))
    return set(found.scalars())


def partition_index_parents(conn) -> dict[str, str]:
    """Each index of a partition of webhook_events -> the parent's index it is part of."""
    found = conn.execute(
        text(
            "SELECT child.relname, parent.relname FROM pg_inherits i"
            " JOIN pg_class child ON child.oid = i.inhrelid"
            " JOIN pg_class parent ON parent.oid = i.inhparent WHERE parent.relkind = 'I'"
        )
    )
    return dict(found.all())
