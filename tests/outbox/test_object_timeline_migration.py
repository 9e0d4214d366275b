"""ix_webhook_events_object on the partitioned webhook_events (0015_object_timeline): built
per partition and attached, valid on the parent, walked by the console's timeline read."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from alembic import command
from sqlalchemy import Engine, text

from outbox.db import make_engine, utcnow
from outbox.event_history import OBJECT_ROWS
from outbox.migrate import alembic_config, upgrade
from outbox.partitions import DEFAULT_PARTITION, LEGACY_PARTITION, list_partitions
from tests.conftest import own_postgres_database
from tests.factories import incoming, record

pytestmark = pytest.mark.postgres

BEFORE = "0014_partitioned_events"
INDEX = "ix_webhook_events_object"
CHILD_INDEXES = text(
    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
    " WHERE i.inhparent = to_regclass(:index)"
)
TABLES_OF_INDEXES = text(
    "SELECT t.relname FROM pg_inherits i JOIN pg_index x ON x.indexrelid = i.inhrelid"
    " JOIN pg_class t ON t.oid = x.indrelid WHERE i.inhparent = to_regclass(:index)"
)
PARENT_INDEX = text("SELECT x.indisvalid FROM pg_index x WHERE x.indexrelid = to_regclass(:index)")


@pytest.fixture
def engine_at_0014() -> Iterator[tuple[str, Engine]]:
    with own_postgres_database("outbox_timeline", BEFORE) as url:
        engine = make_engine(url)
        try:
            yield url, engine
        finally:
            engine.dispose()


def fill_partitions(engine: Engine) -> set[str]:
    """Rows of one object and of others in the legacy partition, two made ahead and the
    default; returns the names of the partitions that hold rows."""
    now = utcnow()
    for n, moment in enumerate([now, now + timedelta(days=2), now + timedelta(days=3)]):
        record(
            engine,
            incoming(object_id="sub_1", created=moment),
            incoming(object_id=f"sub_other_{n}"),
            incoming(),  # names no object
            now=moment,
        )
    record(engine, incoming(object_id="sub_1"), now=now + timedelta(days=400))
    with engine.connect() as conn:
        held = conn.execute(text("SELECT DISTINCT tableoid::regclass::text FROM webhook_events"))
        return set(held.scalars())


def test_the_index_is_built_on_every_partition_and_the_parents_is_valid(engine_at_0014):
    url, engine = engine_at_0014
    holding = fill_partitions(engine)
    assert {LEGACY_PARTITION, DEFAULT_PARTITION} < holding and len(holding) == 4
    upgrade(url)
    with engine.connect() as conn:
        partitions = {p.name for p in list_partitions(conn)}
        indexed = set(conn.execute(TABLES_OF_INDEXES, {"index": INDEX}).scalars())
        valid = conn.execute(PARENT_INDEX, {"index": INDEX}).scalar_one()
        rows = conn.execute(
            text("SELECT count(*) FROM webhook_events WHERE object_id = 'sub_1'")
        ).scalar_one()
    assert indexed == partitions and holding <= partitions
    assert valid is True
    assert rows == 4


def test_the_timeline_read_walks_the_partitions_object_indexes(engine_at_0014):
    url, engine = engine_at_0014
    fill_partitions(engine)
    upgrade(url)
    with engine.connect() as conn:
        children = set(conn.execute(CHILD_INDEXES, {"index": INDEX}).scalars())
        conn.execute(text("ANALYZE webhook_events"))
        conn.execute(text("SET enable_seqscan = off"))  # a few rows: a scan would be cheaper
        plan = conn.execute(
            text(f"EXPLAIN {OBJECT_ROWS}"), {"source": "stripe", "object_id": "sub_1", "limit": 100}
        ).scalars()
        lines = list(plan)
    scanned = {line.split(" using ")[1].split()[0] for line in lines if " using " in line}
    assert scanned and scanned <= children, lines
    assert not any("Seq Scan" in line or "->  Sort" in line for line in lines), (
        lines
    )  # merged in id order


def test_a_partition_made_after_the_migration_has_the_index(engine_at_0014):
    url, engine = engine_at_0014
    upgrade(url)
    record(engine, incoming(object_id="sub_1"), now=utcnow() + timedelta(days=30))  # default
    with engine.connect() as conn:
        conn.execute(text("CREATE TABLE webhook_events_late PARTITION OF webhook_events"
                          " FOR VALUES FROM ('2100-01-01') TO ('2100-01-02')"))  # fmt: skip
        conn.commit()
        indexed = set(conn.execute(TABLES_OF_INDEXES, {"index": INDEX}).scalars())
        partitions = {p.name for p in list_partitions(conn)}
    assert "webhook_events_late" in indexed and indexed == partitions


def test_downgrade_drops_the_index_from_the_parent_and_every_partition(engine_at_0014):
    url, engine = engine_at_0014
    fill_partitions(engine)
    upgrade(url)
    with engine.connect() as conn:
        children = list(conn.execute(CHILD_INDEXES, {"index": INDEX}).scalars())
    command.downgrade(alembic_config(url), BEFORE)
    with engine.connect() as conn:
        left = [
            name
            for name in [INDEX, *children]
            if conn.execute(text("SELECT to_regclass(:n)"), {"n": name}).scalar() is not None
        ]
    assert children and left == []
