"""`outbox purge` on SQLite (and an unpartitioned Postgres): old bodies of finished events
go, tombstones stay, unfinished rows stay. A partitioned Postgres removes whole partitions:
tests/cli/test_purge_partitions.py."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from starlette.testclient import TestClient

from ingress.app import create_app
from outbox.db import utcnow
from outbox.models import Status
from outbox.store import IncomingEvent
from tests.cli.conftest import claim_now, finish, kill, row, skip, stored
from tests.factories import incoming, record, stripe_event_body, stripe_headers
from tests.ingress.conftest import RecordingDoorbell

OLD = timedelta(days=100)

#: The bodies-and-tombstones purge: on Postgres the migrated tables are partitioned.
on_sqlite = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@on_sqlite
def test_purge_removes_old_finished_bodies_and_keeps_tombstones(cli, engine, sessions):
    then = utcnow() - OLD
    done = stored(engine, delivery_id="evt_old_done", event_type="invoice.paid", now=then)
    finish(sessions, done, at=then)
    skipped = stored(engine, now=then)
    skip(sessions, skipped, at=then)
    recent = stored(engine)
    finish(sessions, recent)
    ran = cli("purge", "--older-than", "90d")
    assert ran.code == 0, ran.stderr
    assert "removed the bodies of 2 done/skipped event(s)" in ran.stdout
    tomb = row(sessions, done)
    assert tomb.raw_body is None and tomb.headers == {} and tomb.purged_at is not None
    assert (tomb.source, tomb.delivery_id, tomb.event_type) == ("stripe", "evt_old_done",
                                                                "invoice.paid")  # fmt: skip
    assert tomb.status == Status.DONE and tomb.received_at and tomb.processed_at
    assert row(sessions, skipped).raw_body is None
    assert row(sessions, recent).raw_body is not None


@on_sqlite
def test_purge_never_touches_unfinished_rows(cli, engine, sessions):
    then = utcnow() - OLD
    pending = stored(engine, now=then)
    processing = stored(engine, now=then)
    claim_now(sessions, processing)
    dead = stored(engine, now=then)
    kill(sessions, dead, at=then)
    finish(sessions, stored(engine, now=then), at=then)
    ran = cli("purge", "--older-than", "90d", "--json")
    assert ran.code == 0
    [report] = ran.json_lines()
    assert report["purged"] == 1 and report["unfinished_left_alone"] == 3
    for event_id in (pending, processing, dead):
        assert row(sessions, event_id).raw_body is not None
        assert row(sessions, event_id).purged_at is None


@on_sqlite
def test_dry_run_counts_and_changes_nothing(cli, engine, sessions):
    then = utcnow() - OLD
    done = stored(engine, now=then)
    finish(sessions, done, at=then)
    ran = cli("purge", "--older-than", "90d", "--dry-run")
    assert ran.code == 0
    assert "would remove the bodies of 1 done/skipped event(s)" in ran.stdout
    assert row(sessions, done).raw_body is not None
    [report] = cli("purge", "--older-than", "90d", "--dry-run", "--json").json_lines()
    assert report["would_purge"] == 1 and report["purged"] == 0 and report["dry_run"] is True


def test_nothing_to_purge_exits_1(cli, engine, sessions):
    finish(sessions, stored(engine))
    ran = cli("purge", "--older-than", "90d")
    assert ran.code == 1
    assert "nothing to purge" in ran.stderr


def test_bad_or_too_short_ages_are_usage_errors(cli, engine):
    assert cli("purge").code == 2  # the age is never implied
    bad = cli("purge", "--older-than", "ninety days")
    assert bad.code == 2 and "bad duration for --older-than" in bad.stderr
    short = cli("purge", "--older-than", "90m")
    assert short.code == 2 and "under 1d" in short.stderr
    assert cli("purge", "--older-than", "2026-01-01").code == 2  # an age, not a date


@on_sqlite
def test_a_very_late_duplicate_of_a_purged_event_is_still_recognised_by_the_ingress(
    cli, settings, engine, sessions
):
    then = utcnow() - OLD
    body = stripe_event_body({"id": "cs_late", "object": "checkout.session"},
                             "checkout.session.completed", event_id="evt_late")  # fmt: skip
    from outbox.stripe_events import incoming_stripe_event

    first: IncomingEvent = incoming_stripe_event(body, {}, "stripe#0", "any")
    [stored_first] = record(engine, first, now=then)
    finish(sessions, stored_first.id, at=then)
    assert cli("purge", "--older-than", "90d").code == 0

    doorbell = RecordingDoorbell()
    with TestClient(create_app(settings, engine=engine, doorbell=doorbell)) as client:
        response = client.post("/webhooks/stripe", content=body, headers=stripe_headers(body))
    assert response.status_code == 200
    assert response.json() == {"id": stored_first.id, "duplicate": True}
    tomb = row(sessions, stored_first.id)
    assert tomb.status == Status.DONE and tomb.raw_body is None  # not applied again
    assert doorbell.rung_ids(wait=0.3) == set()  # a done row is not rung
    assert json.loads(body)["id"] == tomb.delivery_id


def old_done_events(engine, sessions, count: int) -> list[int]:
    then = utcnow() - OLD
    ids = [stored(engine, now=then) for _ in range(count)]
    for event_id in ids:
        finish(sessions, event_id, at=then)
    return ids


@on_sqlite
def test_a_large_purge_asks_first_and_a_no_removes_nothing(cli, engine, sessions, monkeypatch):
    monkeypatch.setattr("outbox.cli.purge.ASK_ABOVE_ROWS", 2)
    ids = old_done_events(engine, sessions, 3)
    refused = cli("purge", "--older-than", "90d", input="n\n")
    assert refused.code == 1
    assert "Remove the bodies of 3 events" in refused.stderr
    assert "purge cancelled: nothing removed (use --yes in scripts)" in refused.stderr
    assert all(row(sessions, event_id).raw_body is not None for event_id in ids)
    no_terminal = cli("purge", "--older-than", "90d")  # no answer at all is a no
    assert no_terminal.code == 1
    assert cli("purge", "--older-than", "90d", input="y\n").code == 0
    assert all(row(sessions, event_id).raw_body is None for event_id in ids)


@on_sqlite
def test_yes_purges_without_asking_in_batches_until_none_is_left(
    cli, engine, sessions, monkeypatch
):
    monkeypatch.setattr("outbox.cli.purge.ASK_ABOVE_ROWS", 2)
    monkeypatch.setattr("outbox.cli.purge.BATCH_ROWS", 2)
    ids = old_done_events(engine, sessions, 5)
    ran = cli("purge", "--older-than", "90d", "--yes")
    assert ran.code == 0, ran.stderr
    assert "Remove the bodies" not in ran.stderr
    assert "removed the bodies of 5 done/skipped event(s)" in ran.stdout
    assert all(row(sessions, event_id).raw_body is None for event_id in ids)


@on_sqlite
def test_a_purge_says_how_its_database_gives_the_space_back(cli, engine, sessions):
    old_done_events(engine, sessions, 1)
    ran = cli("purge", "--older-than", "90d")
    assert ran.code == 0, ran.stderr
    said = " ".join(ran.stdout.split())
    assert "VACUUM" in said and "reuses them for new rows" in said
    dry = cli("purge", "--older-than", "90d", "--dry-run")
    assert "VACUUM" not in dry.stdout


@pytest.fixture
def single_table_url():
    """A Postgres at 0013_delivery_index: the online migration's middle step, one table."""
    from tests.conftest import own_postgres_database

    with own_postgres_database("outbox_test_single", "0013_delivery_index") as url:
        yield url


@pytest.mark.postgres
@on_sqlite  # the database is the single table's, passed to the command
def test_an_unpartitioned_postgres_keeps_the_tombstone_purge(cli, single_table_url):
    from sqlalchemy import text

    from outbox.db import make_engine

    engine = make_engine(single_table_url, pool_size=1)
    try:
        [old] = record(engine, incoming("evt_single_old"), now=utcnow() - OLD)
        with engine.begin() as conn:
            conn.execute(text("UPDATE webhook_events SET status = 'done', next_attempt_at = NULL"))
        ran = cli("purge", "--older-than", "90d", database_url=single_table_url)
        assert ran.code == 0, ran.stderr
        assert "removed the bodies of 1 done/skipped event(s)" in ran.stdout
        with engine.connect() as conn:
            body = conn.execute(
                text("SELECT raw_body FROM webhook_events WHERE id = :id"), {"id": old.id}
            ).one()
        assert body.raw_body is None
    finally:
        engine.dispose()
