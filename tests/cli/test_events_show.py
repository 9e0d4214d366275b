"""`outbox events show`: headers, decoded payload, failed attempts, the effects it made."""

from __future__ import annotations

import json
from dataclasses import replace
from decimal import Decimal

import pytest

from domain.effects import EFFECT_FINDERS, effects_of_event, rows_naming_event
from outbox.db import transaction, utcnow
from outbox.models import Source
from tests.cli.conftest import kill, purged_event, stored
from tests.cli.effects import grant
from tests.factories import incoming, record

BODY = {"id": "evt_show", "type": "checkout.session.completed", "data": {"object": {"id": "cs_1"}}}


def test_show_by_id_prints_headers_pretty_payload_and_no_effects(cli, engine):
    event_id = stored(engine, delivery_id="evt_show", body=BODY)
    ran = cli("events", "show", str(event_id))
    assert ran.code == 0, ran.stderr
    out = ran.stdout
    assert f"event {event_id}" in out and "evt_show" in out
    assert "content-type: application/json" in out
    assert '    "object": {\n      "id": "cs_1"' in out  # indented, one key a line
    assert "failed attempts (0)" in out
    assert "effects (0)" in out and "(none recorded)" in out


def test_show_by_delivery_id_finds_the_same_event(cli, engine):
    event_id = stored(engine, delivery_id="0f6a1c6e-1111-4444-8888-123456789abc")
    ran = cli("events", "show", "0f6a1c6e-1111-4444-8888-123456789abc", "--json")
    assert ran.code == 0
    [shown] = ran.json_lines()
    assert shown["id"] == event_id


def test_a_numeric_delivery_id_is_found_when_no_row_has_that_id(cli, engine):
    event_id = stored(engine, delivery_id="9876543210")
    [shown] = cli("events", "show", "9876543210", "--json").json_lines()
    assert shown["id"] == event_id


def test_show_lists_each_failed_attempt_with_its_error(cli, engine, sessions):
    event_id = stored(engine)
    kill(sessions, event_id, "HTTPStatusError: 502 from api.stripe.com")
    ran = cli("events", "show", str(event_id))
    assert "failed attempts (1)" in ran.stdout
    assert "HTTPStatusError: 502 from api.stripe.com" in ran.stdout
    [shown] = cli("events", "show", str(event_id), "--json").json_lines()
    [failure] = shown["failures"]
    assert failure["attempt"] == 1 and failure["outcome"] == "dead"
    assert failure["error"] == "HTTPStatusError: 502 from api.stripe.com"
    assert shown["status"] == "dead" and shown["last_error"] == failure["error"]


def test_json_holds_everything_in_one_line(cli, engine):
    event_id = stored(engine, delivery_id="evt_show", body=BODY)
    ran = cli("events", "show", "evt_show", "--json")
    assert len(ran.stdout.splitlines()) == 1
    shown = json.loads(ran.stdout)
    assert shown["id"] == event_id
    assert shown["payload"] == BODY and shown["payload_error"] is None
    assert shown["headers"] == {"content-type": "application/json"}
    assert shown["verified_by"] == "stripe#0"
    assert shown["effects"] == [] and shown["failures"] == []


def test_effects_registered_for_a_table_are_listed_with_exact_amounts(cli, engine, credits):
    event_id = stored(engine)
    other = stored(engine)
    grant(engine, event_id, "pack:cs_1", "85.0000")
    grant(engine, event_id, "welcome:42", "50")
    grant(engine, other, "pack:cs_2", "25")
    [shown] = cli("events", "show", str(event_id), "--json").json_lines()
    assert [(e["kind"], e["key"], e["amount"]) for e in shown["effects"]] == [
        ("fake_credits", "pack:cs_1", "85.0000"),
        ("fake_credits", "welcome:42", "50.0000"),
    ]
    table = cli("events", "show", str(event_id)).stdout
    assert "effects (2)" in table and "fake_credits: " in table and "key=pack:cs_1" in table


def test_effects_of_event_gathers_every_registered_finder(engine, sessions, monkeypatch):
    monkeypatch.setitem(EFFECT_FINDERS, "b_jobs", lambda s, i: [{"job": i}])
    monkeypatch.setitem(EFFECT_FINDERS, "a_usage", lambda s, i: [{"n": 1}, {"n": 2}])
    with sessions() as session:
        assert effects_of_event(session, 7) == [
            {"kind": "a_usage", "n": 1},
            {"kind": "a_usage", "n": 2},
            {"kind": "b_jobs", "job": 7},
        ]


def test_a_table_without_event_id_cannot_be_wired_in():
    from outbox.models import WebhookEvent

    with pytest.raises(TypeError, match="no event_id"):
        rows_naming_event(WebhookEvent)


def test_a_purged_event_says_its_body_is_gone(cli, engine, sessions):
    event_id = purged_event(engine, sessions)
    ran = cli("events", "show", str(event_id))
    assert ran.code == 0
    assert "body purged at" in ran.stdout and "(purged)" in ran.stdout
    [shown] = cli("events", "show", str(event_id), "--json").json_lines()
    assert shown["payload"] is None and shown["purged_at"]


def test_an_unreadable_body_is_shown_raw_with_the_reason(cli, engine):
    item = replace(incoming("gh-broken", source=Source.GITHUB), raw_body=b"{not json at all")
    [result] = record(engine, item)
    ran = cli("events", "show", str(result.id))
    assert "body is not valid JSON" in ran.stdout
    assert "{not json at all" in ran.stdout


def test_unknown_id_exits_1_and_names_it(cli, engine):
    stored(engine)
    ran = cli("events", "show", "evt_never_seen")
    assert ran.code == 1
    assert "no event has id or delivery id 'evt_never_seen'" in ran.stderr
    assert cli("events", "show", "999999").code == 1


def test_a_delivery_id_stored_by_both_sources_is_ambiguous(cli, engine):
    record(engine, incoming("same-id"), incoming("same-id", source=Source.GITHUB))
    ran = cli("events", "show", "same-id")
    assert ran.code == 1
    assert "several events" in ran.stderr


def test_show_needs_an_id(cli):
    assert cli("events", "show").code == 2


def test_billing_effects_are_wired_in_ledger_entries_shown_with_exact_amounts(
    cli, engine, sessions
):
    from domain.account_opening import ensure_account
    from domain.ledger import credit

    event_id = stored(engine, delivery_id="evt_paid")
    with transaction(sessions) as session:
        ensure_account(session, 42, login="octo", now=utcnow(), welcome_credits=Decimal(0))
        credit(session, 42, Decimal("85.5"), key="pack:cs_9", reason="pack Pro",
               now=utcnow(), event_id=event_id)  # fmt: skip
    [shown] = cli("events", "show", "evt_paid", "--json").json_lines()
    [entry] = [e for e in shown["effects"] if e["kind"] == "credit_ledger"]
    assert entry["key"] == "pack:cs_9" and entry["account_id"] == 42
    assert Decimal(entry["amount"]) == Decimal("85.5")
    kill(sessions, event_id)
    plan = cli("events", "replay", "--dry-run", "evt_paid").stdout
    assert "credit_ledger: " in plan and "key=pack:cs_9" in plan


def test_every_table_that_records_an_effect_is_wired_into_the_registry(engine, sessions):
    from sqlalchemy import event as sa_event

    from outbox.db import Base

    # The outbox's own log of attempts and its delivery index: not effects.
    with_event_id = {t.name for t in Base.metadata.sorted_tables if "event_id" in t.c} - {
        "webhook_event_failures",
        "webhook_deliveries",
    }
    queried: list[str] = []

    def remember(conn, cursor, statement, *args):
        queried.append(statement)

    sa_event.listen(engine, "before_cursor_execute", remember)
    try:
        with sessions() as session:
            effects_of_event(session, 1)
    finally:
        sa_event.remove(engine, "before_cursor_execute", remember)
    asked = " ".join(queried)
    assert {name for name in with_event_id if f"FROM {name}" not in asked} == set()


def test_show_says_why_a_done_event_changed_nothing(cli, engine, settings):
    from processors import runtime as runtimes
    from processors.apply import Outcome, process_pass
    from tests.domain.billing_support import checkout_session

    unpaid = checkout_session(583231, pack="price_pro", payment_status="unpaid")
    event = {"id": "evt_unpaid", "type": "checkout.session.completed", "data": {"object": unpaid}}
    event_id = stored(engine, delivery_id="evt_unpaid", event_type=event["type"], body=event)
    assert process_pass(runtimes.configure(settings, engine=engine), [event_id]) == {
        Outcome.DONE: 1
    }
    ran = cli("events", "show", str(event_id))
    assert ran.code == 0, ran.stderr
    said = " ".join(ran.stdout.split())
    assert "note checkout not paid (payment_status 'unpaid')" in said
    assert "effects (0) (none: checkout not paid" in said
    [shown] = cli("events", "show", str(event_id), "--json").json_lines()
    assert shown["status"] == "done" and shown["note"].startswith("checkout not paid")
