"""The online move of a single webhook_events table to partitions (0012 -> 0013 -> head)."""

from __future__ import annotations

import psycopg
import pytest

from outbox import store
from outbox.db import make_engine, utcnow
from outbox.migrate import upgrade
from outbox.partitions import LEGACY_PARTITION, list_partitions
from outbox.schema import SERVING_BEFORE_HEAD
from tests.factories import incoming
from tests.outbox.single_table import conninfo_of, fill_single_table, insert_the_old_way

pytestmark = pytest.mark.postgres

ROWS = (
    "SELECT id, source, delivery_id, received_at, status, raw_body FROM webhook_events ORDER BY id"
)


def test_the_move_keeps_every_row_id_and_delivery_and_the_ids_continue(database_at_0012):
    url = database_at_0012
    fill_single_table(conninfo_of(url), 3000)
    with psycopg.connect(conninfo_of(url), autocommit=True) as conn:
        insert_the_old_way(conn, "before-0013")
        upgrade(url, SERVING_BEFORE_HEAD)
        after_expand = insert_the_old_way(conn, "at-0013")
        assert insert_the_old_way(conn, "at-0013") is None  # the old code's own duplicate
        before = conn.execute(ROWS).fetchall()
        indexed = conn.execute(
            "SELECT event_id, source, delivery_id, received_at FROM webhook_deliveries"
            " ORDER BY event_id"
        ).fetchall()
        failures = conn.execute("SELECT count(*) FROM webhook_event_failures").fetchone()
    assert indexed == [row[:4] for row in before]  # the backfill's and the trigger's
    assert len(before) == 3002 and after_expand == before[-1][0]

    upgrade(url)
    with psycopg.connect(conninfo_of(url), autocommit=True) as conn:
        assert conn.execute(ROWS).fetchall() == before
        assert conn.execute("SELECT count(*) FROM webhook_event_failures").fetchone() == failures
        triggers = conn.execute(
            "SELECT count(*) FROM pg_trigger WHERE tgname = 'webhook_deliveries_index'"
        ).fetchone()
    assert triggers == (0,)
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            new, old = store.record(
                conn, [incoming("after-the-swap"), incoming(before[0][2], source="github")],
                utcnow(),
            )  # fmt: skip
            partitions = list_partitions(conn)
    finally:
        engine.dispose()
    assert not new.duplicate and new.id > before[-1][0]
    assert old.duplicate and old.id == before[0][0]
    assert partitions[0].name == LEGACY_PARTITION and partitions[0].lower is None
