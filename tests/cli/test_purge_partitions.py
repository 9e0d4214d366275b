"""`outbox purge` on a partitioned Postgres: whole partitions older than the cut-off go,
their unfinished rows are kept, and what it did (or would do) is said per partition."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from ingress.app import create_app
from outbox.partitions import DEFAULT_PARTITION
from outbox.stripe_events import incoming_stripe_event
from tests.factories import record, stripe_event_body, stripe_headers
from tests.ingress.conftest import RecordingDoorbell
from tests.outbox.retention_support import (
    DAYS_BACK,
    analyse,
    database_url,  # noqa: F401 -- the fixture: a database of daily partitions
    day_ago,
    failed,
    finished_rows,
    partition_name_of,
    partition_names,
    partitioned_url,  # noqa: F401
    stored,
    table_of,
)

pytestmark = pytest.mark.postgres

#: Days 10 to 4 go (their upper bound is at or before the start of day 3).
OLDER_THAN = "3d"
REMOVED = DAYS_BACK - 3


def some_old_rows(engine, sessions) -> dict[str, int]:
    finished_rows(engine, day_ago(5), 3)
    dead = stored(engine, day_ago(5))
    failed(sessions, dead, day_ago(5))
    pending = stored(engine, day_ago(4))
    young = stored(engine, day_ago(1))
    return {"dead": dead, "pending": pending, "young": young}


def test_purge_removes_old_partitions_and_says_what_it_kept(cli, engine, sessions):
    rows = some_old_rows(engine, sessions)
    ran = cli("purge", "--older-than", OLDER_THAN, "--yes")
    assert ran.code == 0, ran.stderr
    said = " ".join(ran.stdout.split())
    assert f"removed {REMOVED} partition(s) and 3 row(s)" in said
    assert f"kept 2 unfinished row(s), moved to {DEFAULT_PARTITION}" in said
    assert f"{partition_name_of(day_ago(5))}: 3 row(s), kept 1 dead" in said
    assert "files go back to the disk at once" in said
    assert partition_name_of(day_ago(5)) not in partition_names(engine)
    assert table_of(engine, rows["dead"]) == DEFAULT_PARTITION
    assert table_of(engine, rows["pending"]) == DEFAULT_PARTITION
    assert table_of(engine, rows["young"]) == partition_name_of(day_ago(1))


def test_dry_run_shows_each_partition_with_estimates_and_changes_nothing(cli, engine, sessions):
    some_old_rows(engine, sessions)
    analyse(engine)
    before = partition_names(engine)
    ran = cli("purge", "--older-than", OLDER_THAN, "--dry-run")
    assert ran.code == 0, ran.stderr
    said = " ".join(ran.stdout.split())
    assert f"would remove {REMOVED} partition(s)" in said and "about 3 row(s)" in said
    assert "as the statistics estimate them" in said
    assert f"{partition_name_of(day_ago(5))} [" in said
    assert "~4 row(s) (estimate), kept 1 dead" in said
    assert "~1 row(s) (estimate), kept 1 pending" in said
    assert partition_names(engine) == before


def test_json_gives_the_partition_figures(cli, engine, sessions):
    some_old_rows(engine, sessions)
    analyse(engine)
    [plan] = cli("purge", "--older-than", OLDER_THAN, "--dry-run", "--json").json_lines()
    assert plan["by_partitions"] and plan["rows_estimated"] and plan["would_purge"] == 3
    assert len(plan["partitions"]) == REMOVED and plan["unfinished_left_alone"] == 2
    day5 = next(p for p in plan["partitions"] if p["name"] == partition_name_of(day_ago(5)))
    assert day5["estimated_rows"] == 4 and day5["unfinished_kept"] == {"dead": 1}
    [done] = cli("purge", "--older-than", OLDER_THAN, "--json").json_lines()
    assert (done["partitions_removed"], done["rows_removed"], done["unfinished_kept"]) == (
        REMOVED,
        3,
        2,
    )
    assert done["purged"] == 3 and done["dry_run"] is False
    day5 = next(p for p in done["partitions"] if p["name"] == partition_name_of(day_ago(5)))
    assert day5 == {"name": day5["name"], "rows": 3, "unfinished_kept": {"dead": 1}, "failures": 0}


def test_nothing_older_than_the_oldest_partition_is_nothing_to_purge(cli, engine):
    stored(engine, day_ago(1))
    ran = cli("purge", "--older-than", f"{DAYS_BACK + 5}d")
    assert ran.code == 1 and "nothing to purge" in ran.stderr


def test_a_large_purge_asks_first_and_a_no_removes_nothing(cli, engine, monkeypatch):
    monkeypatch.setattr("outbox.cli.purge.ASK_ABOVE_ROWS", 2)
    finished_rows(engine, day_ago(5), 3)
    analyse(engine)
    before = partition_names(engine)
    refused = cli("purge", "--older-than", OLDER_THAN, input="n\n")
    assert refused.code == 1 and "Remove about 3 events" in refused.stderr
    assert partition_names(engine) == before
    assert cli("purge", "--older-than", OLDER_THAN, "--yes").code == 0
    assert partition_name_of(day_ago(5)) not in partition_names(engine)


def test_a_partition_never_analysed_has_no_estimate_so_the_purge_asks(cli, engine):
    finished_rows(engine, day_ago(5), 3)  # not analysed yet: no estimate of its rows
    refused = cli("purge", "--older-than", OLDER_THAN)
    assert refused.code == 1 and "(and partitions never analysed)" in refused.stderr
    dry = cli("purge", "--older-than", OLDER_THAN, "--dry-run")
    assert "rows unknown (never analysed)" in dry.stdout


def test_a_late_duplicate_of_a_purged_delivery_is_a_duplicate_at_the_ingress(cli, settings, engine):
    body = stripe_event_body({"id": "cs_late", "object": "checkout.session"},
                             "checkout.session.completed", event_id="evt_late")  # fmt: skip
    [first] = record(engine, incoming_stripe_event(body, {}, "stripe#0", "any"), now=day_ago(5))
    assert cli("purge", "--older-than", OLDER_THAN, "--yes").code == 0  # kept: it was pending
    assert table_of(engine, first.id) == DEFAULT_PARTITION
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE webhook_events SET status = 'done', next_attempt_at = NULL")
    assert cli("purge", "--older-than", "2d", "--yes").code == 0  # the default's rows go
    assert table_of(engine, first.id) is None

    doorbell = RecordingDoorbell()
    with TestClient(create_app(settings, engine=engine, doorbell=doorbell)) as client:
        response = client.post("/webhooks/stripe", content=body, headers=stripe_headers(body))
    assert response.status_code == 200
    assert response.json() == {"id": first.id, "duplicate": True}
    assert table_of(engine, first.id) is None  # not stored again
    assert doorbell.rung_ids(wait=0.3) == set()


def test_bad_ages_are_still_usage_errors(cli):
    assert cli("purge", "--older-than", "90m").code == 2
    assert cli("purge", "--older-than", "soon").code == 2


def test_doctor_names_a_partition_a_stopped_purge_left_and_the_next_purge_drops_it(
    cli, settings, engine
):
    from outbox.cli.doctor import check_detached_partitions
    from outbox.retention import detach_partition

    finished_rows(engine, day_ago(5), 2)
    name = partition_name_of(day_ago(5))
    assert check_detached_partitions(settings) == []
    with engine.connect() as conn:
        detach_partition(conn, name)  # ... and the purge stopped there
    [check] = check_detached_partitions(settings)
    assert check.verdict == "warn" and name in check.detail
    [done] = cli("purge", "--older-than", OLDER_THAN, "--json").json_lines()
    leftover = next(p for p in done["partitions"] if p["name"] == name)
    assert leftover["rows"] == 2
    assert check_detached_partitions(settings) == []
