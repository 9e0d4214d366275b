"""`outbox events stats`: counts by source and status, the lag, the dead of the last day."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from outbox.db import transaction, utcnow
from outbox.models import Source, WebhookEvent
from tests.cli.conftest import claim_now, finish, kill, stored


def test_counts_lag_and_recent_dead_as_one_json_object(cli, engine, sessions):
    now = utcnow()
    stored(engine, now=now - timedelta(minutes=10))  # due 10 minutes ago: the lag
    stored(engine)
    finish(sessions, stored(engine, source=Source.GITHUB))
    kill(sessions, stored(engine))
    long_ago = now - timedelta(days=3)
    kill(sessions, stored(engine, now=long_ago), at=long_ago)  # dead, but not in the last day
    claim_now(sessions, stored(engine, source=Source.GITHUB))
    ran = cli("events", "stats", "--json")
    assert ran.code == 0, ran.stderr
    [stats] = ran.json_lines()
    assert stats["counts"] == {
        "github": {"done": 1, "processing": 1},
        "stripe": {"dead": 2, "pending": 2},
    }
    assert stats["total"] == 6
    assert 600 <= stats["oldest_due_age_seconds"] < 660
    assert stats["dead_last_day"] == 1
    assert stats["expired_leases"] == 0


def test_rows_due_later_are_not_lag(cli, engine, sessions):
    later = stored(engine)
    with transaction(sessions) as session:
        session.execute(
            update(WebhookEvent)
            .where(WebhookEvent.id == later)
            .values(next_attempt_at=utcnow() + timedelta(hours=1))
        )
    [stats] = cli("events", "stats", "--json").json_lines()
    assert stats["oldest_due_age_seconds"] is None


def test_table_for_people_names_each_source_and_the_lag(cli, engine, sessions):
    kill(sessions, stored(engine))
    ran = cli("events", "stats")
    assert ran.code == 0
    header, *rows = ran.stdout.splitlines()[:3]
    assert header.split() == ["source", "pending", "processing", "done", "dead", "skipped", "total"]
    assert rows[0].split() == ["github", "0", "0", "0", "0", "0", "0"]
    assert rows[1].split() == ["stripe", "0", "0", "0", "1", "0", "1"]
    assert "oldest due row waiting: nothing due" in ran.stdout
    assert "dead in the last day: 1" in ran.stdout


def test_an_empty_outbox_has_stats_too(cli, engine):
    [stats] = cli("events", "stats", "--json").json_lines()
    assert stats["total"] == 0 and stats["counts"] == {}


def test_stats_name_an_unreachable_database(cli):
    ran = cli("events", "stats", database_url="postgresql+psycopg://postgres@127.0.0.1:1/x")
    assert ran.code == 1 and "database unreachable" in ran.stderr


def test_a_large_table_s_stats_show_the_rows_in_play_and_say_the_rest_is_an_estimate():
    import io

    from outbox.cli.common import SafeConsole
    from outbox.cli.event_display import print_stats
    from outbox.query_results import EventStats

    result = EventStats(
        counts={("stripe", "pending"): 2, ("github", "dead"): 1},
        oldest_due_age=None,
        dead_last_day=0,
        expired_leases=0,
        finished_estimate=19_999_000,
        partitions=64,
    )
    out = io.StringIO()
    print_stats(SafeConsole(file=out, width=120), result)
    header, github, stripe, estimate, *_ = out.getvalue().splitlines()
    assert header.split() == ["source", "pending", "processing", "dead", "total"]
    assert github.split() == ["github", "0", "0", "1", "1"]
    assert stripe.split() == ["stripe", "2", "0", "0", "2"]
    assert estimate == (
        "done or skipped: about 19,999,000 (an estimate from the table's statistics,"
        " 64 partitions); the counts above are exact"
    )
    assert result.as_json()["total"] == 19_999_003
    assert result.as_json()["total_exact"] is False
