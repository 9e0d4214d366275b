"""`outbox events tail`: the latest events, then new ones and their outcomes as they happen,
with the filters of `events list`, read by ranges of the primary key."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import text

from outbox import queries, store
from outbox.db import utcnow
from outbox.driver.dbapi import Connection
from outbox.event_tail import EventTail
from outbox.models import Source
from outbox.queries import EventFilter
from tests.cli.conftest import finish, kill, stored
from tests.factories import incoming
from tests.outbox.storage_support import tables_holding_rows

SETTLE = timedelta(seconds=6)


class Printed:
    """What a tail printed: (kind, id, status) per line."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, int, str]] = []

    def __call__(self, kind, row) -> None:
        self.lines.append((kind, row.id, row.status))

    def take(self) -> list[tuple[str, int, str]]:
        lines, self.lines = self.lines, []
        return lines


def test_tail_shows_the_latest_matching_events_oldest_first(cli, engine):
    stripe_ids = [stored(engine, event_type="invoice.paid") for _ in range(4)]
    stored(engine, source=Source.GITHUB, event_type="push")
    ran = cli("events", "tail", "--json", "--last", "3", "--source", "stripe")
    assert ran.code == 0, ran.stderr
    rows = ran.json_lines()
    assert [r["id"] for r in rows] == stripe_ids[-3:]
    assert all(r["seen"] == "new" and r["status"] == "pending" for r in rows)


def test_tail_in_text_is_one_line_per_event_with_untrusted_text_made_visible(cli, engine):
    stored(engine, event_type="invoice.\x1b[31mpaid", delivery_id="evt_text")
    ran = cli("events", "tail")
    assert ran.code == 0
    [line] = ran.stdout.splitlines()
    assert "invoice.\\x1b[31mpaid" in line and "\x1b" not in line
    assert "pending" in line and "evt_text" in line


def test_tail_with_no_match_says_so_and_exits_1(cli, engine):
    stored(engine)
    ran = cli("events", "tail", "--status", "dead")
    assert ran.code == 1
    assert "no events match" in ran.stderr


def test_following_prints_new_rows_then_their_outcomes(engine, sessions, reads):
    printed = Printed()
    tail = EventTail(EventFilter(), SETTLE)
    assert tail.start(reads, 10, printed) == 0
    first, second = stored(engine), stored(engine)
    tail.follow(reads, printed, 0.0, polls=1)
    assert printed.take() == [("new", first, "pending"), ("new", second, "pending")]
    finish(sessions, first)
    kill(sessions, second, "boom")
    tail.follow(reads, printed, 0.0, polls=2)  # the second look finds nothing new
    assert printed.take() == [("outcome", first, "done"), ("outcome", second, "dead")]
    assert tail.watched == {}


def test_following_keeps_to_the_filter(engine, reads):
    printed = Printed()
    tail = EventTail(EventFilter(sources=("github",), event_type="pull_request.*"), SETTLE)
    tail.start(reads, 10, printed)
    stored(engine, source=Source.STRIPE, event_type="pull_request.opened")
    wanted = stored(engine, source=Source.GITHUB, event_type="pull_request.opened")
    stored(engine, source=Source.GITHUB, event_type="push")
    tail.follow(reads, printed, 0.0, polls=1)
    assert printed.take() == [("new", wanted, "pending")]


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_row_committed_after_a_higher_id_is_still_shown_once(engine, reads):
    printed = Printed()
    tail = EventTail(EventFilter(), SETTLE)
    tail.start(reads, 10, printed)
    late = engine.connect()
    transaction = late.begin()
    [slow] = store.record(late, [incoming()], utcnow())  # its id is taken, not yet visible
    quick = stored(engine)
    tail.follow(reads, printed, 0.0, polls=1)
    assert printed.take() == [("new", quick, "pending")]
    transaction.commit()
    late.close()
    tail.follow(reads, printed, 0.0, polls=2)
    assert printed.take() == [("new", slow.id, "pending")]


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_poll_reads_a_range_of_the_primary_key_on_a_large_table(engine, reads):
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO webhook_events (source, delivery_id, event_type, headers,"
                " received_at, status) SELECT 'stripe', 'evt_' || n, 'invoice.paid', '{}',"
                " now() - interval '1 day', 'done' FROM generate_series(1, 50000) AS n"
            )
        )
        conn.execute(text("ANALYZE webhook_events"))
        top = conn.scalar(text("SELECT max(id) FROM webhook_events"))
        holding = tables_holding_rows(conn)
    where = EventFilter(statuses=("dead",), sources=("stripe",))
    for read in (
        lambda db: queries.events_after(db, where, after_id=top - 10, up_to_id=top, limit=9),
        lambda db: queries.settled_id(db, utcnow() - SETTLE),
        lambda db: queries.newest_id(db),
    ):
        plan = _plan_of(reads, read)
        # an index on the id: the primary key (or, for dead rows, their partial index), in
        # the partition that holds the rows on Postgres
        assert re.search(
            r"Scan (Backward )?using (\w*_pkey|ix_webhook_events_dead\w*|\w+_id_idx)",
            plan,
        ), plan
        assert not any(f"Seq Scan on {table} " in plan for table in holding), plan


class _Recording:
    """A DBAPI connection that keeps each statement its cursors are given."""

    def __init__(self, dbapi) -> None:
        self.dbapi = dbapi
        self.sent: list[tuple[str, object]] = []

    def cursor(self):
        return _RecordingCursor(self.dbapi.cursor(), self.sent)


class _RecordingCursor:
    def __init__(self, cursor, sent: list[tuple[str, object]]) -> None:
        self._cursor = cursor
        self._sent = sent

    def execute(self, statement, params=None):
        self._sent.append((statement, params))
        return self._cursor.execute(statement, params)

    def __getattr__(self, name):
        return getattr(self._cursor, name)


def _plan_of(reads: Connection, read) -> str:
    """Postgres's plan for the one statement `read(db)` sends."""
    recording = _Recording(reads.dbapi)
    read(Connection(recording, reads.dialect))
    [(statement, params)] = recording.sent
    cursor = reads.dbapi.cursor()
    cursor.execute("EXPLAIN " + statement, params)
    return "\n".join(row[0] for row in cursor.fetchall())
