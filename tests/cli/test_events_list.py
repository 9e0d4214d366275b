"""`outbox events list`: filters, newest first, paging, table and JSON, and its errors."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest

from outbox.db import transaction, utcnow
from outbox.models import Source
from tests.cli.conftest import finish, kill, stored
from tests.factories import incoming, record


def ids(ran) -> list[int]:
    return [r["id"] for r in ran.json_lines()]


def test_json_lists_every_event_newest_first_one_object_per_line(cli, engine, sessions):
    first = stored(engine, delivery_id="evt_old", event_type="invoice.paid")
    second = stored(engine, delivery_id="gh-1", source=Source.GITHUB, event_type="push")
    ran = cli("events", "list", "--json")
    assert ran.code == 0, ran.stderr
    assert ids(ran) == [second, first]
    assert len(ran.stdout.splitlines()) == 2
    newest = ran.json_lines()[0]
    assert newest["delivery_id"] == "gh-1" and newest["source"] == "github"
    assert newest["status"] == "pending" and newest["attempts"] == 0
    assert newest["received_at"].endswith("+00:00")


def test_status_source_and_delivery_filters_combine(cli, engine, sessions):
    dead_stripe = stored(engine, delivery_id="evt_dead")
    kill(sessions, dead_stripe)
    dead_github = stored(engine, source=Source.GITHUB, delivery_id="gh-dead")
    kill(sessions, dead_github)
    done = stored(engine, delivery_id="evt_done")
    finish(sessions, done)
    assert ids(cli("events", "list", "--json", "--status", "dead")) == [dead_github, dead_stripe]
    both = cli("events", "list", "--json", "--status", "dead", "--status", "done")
    assert ids(both) == [done, dead_github, dead_stripe]
    assert ids(cli("events", "list", "--json", "--status", "dead", "--source", "stripe")) == [
        dead_stripe
    ]
    assert ids(cli("events", "list", "--json", "--delivery", "evt_done")) == [done]


def test_type_wildcards_match_runs_of_characters_and_nothing_else(cli, engine):
    paid = stored(engine, event_type="invoice.paid")
    failed = stored(engine, event_type="invoice.payment_failed")
    deleted = stored(engine, event_type="customer.subscription.deleted")
    stored(engine, event_type="invoicexpaid")
    stored(engine, event_type="invoice_paid")
    assert ids(cli("events", "list", "--json", "--type", "invoice.*")) == [failed, paid]
    assert ids(cli("events", "list", "--json", "--type", "*.deleted")) == [deleted]
    assert ids(cli("events", "list", "--json", "--type", "invoice.paid")) == [paid]
    # `_` and `%` are literal characters here, never SQL wildcards
    assert ids(cli("events", "list", "--json", "--type", "invoice.payment_%")) == []


def test_account_filter_takes_the_numeric_id(cli, engine):
    [theirs, other, _] = record(
        engine,
        replace(incoming("evt_a"), account_id=42),
        replace(incoming("evt_b"), account_id=4242),
        incoming("evt_c"),
    )
    assert ids(cli("events", "list", "--json", "--account", "42")) == [theirs.id]
    assert ids(cli("events", "list", "--json", "--account", "4242")) == [other.id]


def test_account_filter_takes_a_login_of_a_known_account(cli, engine, sessions):
    from domain.account_opening import ensure_account

    with transaction(sessions) as session:
        ensure_account(session, 42, login="Octo-Org", now=utcnow(), welcome_credits=Decimal(0))
    [theirs] = record(engine, replace(incoming("evt_a"), account_id=42))
    stored(engine)
    assert ids(cli("events", "list", "--json", "--account", "octo-org")) == [theirs.id]
    unknown = cli("events", "list", "--account", "nobody-here")
    assert unknown.code == 1 and "no account with login or id 'nobody-here'" in unknown.stderr


def test_since_and_until_take_durations_and_iso_dates(cli, engine):
    now = utcnow()
    old = stored(engine, now=now - timedelta(days=5))
    middle = stored(engine, now=now - timedelta(hours=5))
    recent = stored(engine, now=now - timedelta(minutes=5))
    assert ids(cli("events", "list", "--json", "--since", "3h")) == [recent]
    assert ids(cli("events", "list", "--json", "--since", "2d", "--until", "30m")) == [middle]
    day = (now - timedelta(days=4)).date().isoformat()
    assert ids(cli("events", "list", "--json", "--until", day)) == [old]
    stamp = (now - timedelta(hours=6)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert ids(cli("events", "list", "--json", "--since", stamp)) == [recent, middle]


def test_pages_by_before_id_and_by_page_number(cli, engine):
    made = [stored(engine) for _ in range(5)]
    newest_first = made[::-1]
    first = cli("events", "list", "--json", "--limit", "2")
    assert ids(first) == newest_first[:2]
    second = cli("events", "list", "--json", "--limit", "2", "--before-id", str(ids(first)[-1]))
    assert ids(second) == newest_first[2:4]
    assert ids(cli("events", "list", "--json", "--limit", "2", "--page", "3")) == newest_first[4:]
    past_the_end = cli("events", "list", "--json", "--limit", "2", "--page", "4")
    assert past_the_end.code == 1 and "past the last page" in past_the_end.stderr


def test_table_shows_the_rows_and_how_to_get_the_next_page(cli, engine, sessions):
    dead = stored(engine, delivery_id="evt_table_dead", event_type="charge.refunded")
    kill(sessions, dead, "Stripe said 500")
    stored(engine, delivery_id="evt_table_new", event_type="invoice.paid")
    ran = cli("events", "list", "--limit", "2")
    assert ran.code == 0
    lines = ran.stdout.splitlines()
    assert lines[0].split()[:4] == ["id", "received", "source", "type"]
    assert "evt_table_new" in lines[1] and "evt_table_dead" in lines[2]
    assert "charge.refunded" in lines[2] and "dead" in lines[2] and "Stripe said 500" in lines[2]
    assert f"--before-id {dead}" in ran.stdout


def test_nothing_matching_exits_1_and_says_so(cli, engine):
    stored(engine)
    ran = cli("events", "list", "--status", "dead")
    assert ran.code == 1
    assert "no events match" in ran.stderr, ran.stderr
    assert ran.stdout == ""


def test_usage_errors_exit_2_and_name_the_problem(cli, engine):
    bad_duration = cli("events", "list", "--since", "3 fortnights")
    assert bad_duration.code == 2 and "--since" in bad_duration.stderr
    assert "'3 fortnights'" in bad_duration.stderr
    bad_status = cli("events", "list", "--status", "deadish")
    assert bad_status.code == 2 and "deadish" in bad_status.stderr
    assert cli("events", "list", "--source", "gitlab").code == 2
    assert cli("events", "list", "--frobnicate").code == 2
    both = cli("events", "list", "--page", "2", "--before-id", "9")
    assert both.code == 2 and "not both" in both.stderr
    backwards = cli("events", "list", "--since", "1h", "--until", "2h")
    assert backwards.code == 2 and "before --until" in backwards.stderr


def test_unreachable_database_is_named_without_a_traceback(cli):
    ran = cli("events", "list", database_url="postgresql+psycopg://postgres@127.0.0.1:1/nope")
    assert ran.code == 1
    assert "database unreachable" in ran.stderr
    assert "Traceback" not in ran.stderr + ran.stdout


def test_database_without_the_schema_says_to_migrate(cli, tmp_path):
    ran = cli("events", "list", database_url=f"sqlite:///{tmp_path / 'empty.db'}")
    assert ran.code == 1
    assert "outbox migrate" in ran.stderr


def test_checks_the_settings_it_reads_and_no_others(cli, engine):
    stored(engine, delivery_id="evt_listed")
    ran = cli("events", "list", database_timeout_seconds="0")
    assert ran.code == 2
    assert (
        ran.stderr.strip()
        == "error: setting DATABASE_TIMEOUT_SECONDS: Input should be greater than 0"
    )
    # a setting the ingress and the processors read: they and `outbox doctor` refuse it
    listed = cli("events", "list", stripe_mode="sometimes")
    assert listed.code == 0 and "evt_listed" in listed.stdout


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_listing_cut_short_by_its_time_budget_says_how_far_back_it_looked(
    cli, engine, monkeypatch
):
    from outbox import partition_walk

    stored(engine, event_type="rare.type", now=utcnow() - timedelta(days=400))
    monkeypatch.setattr(partition_walk, "LIST_SCAN_BUDGET", timedelta(0))
    ran = cli("events", "list", "--type", "rare.*")
    assert ran.code == 1, (ran.stdout, ran.stderr)
    assert "older partitions were not read in time" in ran.stderr
    assert "no events match" in ran.stderr, ran.stderr
