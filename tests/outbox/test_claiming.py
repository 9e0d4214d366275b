"""Claims: a row is taken by one worker at a time, in its object's created order."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from outbox import claiming, finishing
from outbox.db import transaction, utcnow
from tests.factories import incoming, record
from tests.outbox import storage_support as support


def test_two_claims_never_take_the_same_row(engine, sessions):
    record(engine, *(incoming() for _ in range(5)))
    first = support.claim(sessions, limit=3)
    second = support.claim(sessions, limit=10)
    assert len(first) == 3 and len(second) == 2
    assert not {c.id for c in first} & {c.id for c in second}
    assert support.claim(sessions, limit=10) == []


def test_claim_takes_only_the_ids_asked_for(engine, sessions):
    results = record(engine, *(incoming() for _ in range(3)))
    claimed = support.claim(sessions, ids=[results[1].id])
    assert [c.id for c in claimed] == [results[1].id]
    assert claimed[0].attempts == 1


def test_a_pass_claims_its_named_rows_first_then_the_oldest_others_up_to_its_limit(
    engine, sessions
):
    ids = [r.id for r in record(engine, *(incoming(f"evt_{n}") for n in range(6)))]
    claimed = support.claim_for_pass(sessions, ids=[ids[4], ids[5]], limit=4)
    assert sorted(c.id for c in claimed) == [ids[0], ids[1], ids[4], ids[5]]
    assert len({c.lease_owner for c in claimed}) == 1
    assert all(c.attempts == 1 and c.lease_expires_at.tzinfo is not None for c in claimed)
    # Named rows already taken: the pass takes the others that are due, never a row twice.
    again = support.claim_for_pass(sessions, ids=[ids[4], ids[5]], limit=4)
    assert sorted(c.id for c in again) == [ids[2], ids[3]]
    assert support.claim_for_pass(sessions, ids=[ids[0]], limit=4) == []


def test_a_pass_claims_a_named_row_of_an_object_only_after_the_earlier_event(engine, sessions):
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    early, late = record(
        engine,
        incoming("evt_early", object_id="sub_1", created=t0),
        incoming("evt_late", object_id="sub_1", created=t0 + timedelta(seconds=5)),
    )
    [claimed] = support.claim_for_pass(sessions, ids=[late.id], limit=10)
    assert claimed.id == early.id  # the named one waits; the earlier one is due
    assert support.claim_for_pass(sessions, ids=[late.id], limit=10) == []


def test_events_of_one_object_are_claimed_in_created_order(engine, sessions):
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    late = incoming("evt_late", object_id="sub_1", created=t0 + timedelta(seconds=5))
    early = incoming("evt_early", object_id="sub_1", created=t0)
    other = incoming("evt_other", object_id="sub_2", created=t0 + timedelta(seconds=9))
    ids = {r.id for r in record(engine, late, early, other)}
    first = support.claim(sessions, limit=10)
    assert {c.delivery_id for c in first} == {"evt_early", "evt_other"}
    assert support.claim(sessions, limit=10) == []  # evt_late waits while evt_early is processing
    with transaction(sessions) as session:
        early_claim = next(c for c in first if c.delivery_id == "evt_early")
        assert finishing.fail(
            session, early_claim, "boom", policy=support.THREE_TRIES, now=utcnow(), permanent=True
        )
    [late_claim] = support.claim(sessions, limit=10)
    assert late_claim.delivery_id == "evt_late" and late_claim.id in ids


def test_an_older_event_arriving_late_waits_while_a_newer_one_of_its_object_is_processing(
    engine, sessions
):
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    record(engine, incoming("evt_new", object_id="sub_1", created=t0 + timedelta(seconds=5)))
    [newer] = support.claim(sessions, limit=10)
    [older] = record(engine, incoming("evt_old", object_id="sub_1", created=t0))
    record(engine, incoming("evt_other", object_id="sub_2", created=t0))
    assert [c.delivery_id for c in support.claim(sessions, limit=10)] == ["evt_other"]
    assert support.claim_for_pass(sessions, ids=[older.id], limit=10) == []
    with transaction(sessions) as session:
        assert finishing.mark_done(session, newer, utcnow())
    [claimed] = support.claim(sessions, limit=10)
    assert claimed.id == older.id


def test_a_claim_not_yet_committed_keeps_a_concurrent_claim_off_its_objects(
    database_url, engine, sessions
):
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer at a time: a second claim waits for the first")
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    record(engine, incoming("evt_new", object_id="sub_1", created=t0 + timedelta(seconds=5)))
    with transaction(sessions) as first:
        [newer] = claiming.claim(first, now=utcnow(), lease=support.LEASE, limit=10)
        # An older event of the object is stored while the first claim is not committed:
        # the second claim cannot see evt_new processing yet, and must still leave evt_old.
        [older] = record(engine, incoming("evt_old", object_id="sub_1", created=t0))
        assert support.claim(sessions, limit=10) == []
        assert support.claim_for_pass(sessions, ids=[older.id], limit=10) == []
    assert newer.delivery_id == "evt_new"
    assert support.claim(sessions, limit=10) == []  # committed: evt_new is processing


def test_a_claim_leaves_the_rows_of_an_account_another_claims_rows_are_about(engine, sessions):
    first, second, other = record(
        engine,
        incoming("evt_a1", account_id=1),
        incoming("evt_a2", account_id=1),
        incoming("evt_b1", account_id=2),
    )
    [held] = support.claim(sessions, limit=1)
    assert held.id == first.id
    # Account 1 is in play under the first claim's lease: only account 2's row is taken.
    taken = support.claim_for_pass(sessions, ids=[second.id], limit=10)
    assert [c.id for c in taken] == [other.id]
    with transaction(sessions) as session:
        assert finishing.mark_done(session, held, utcnow())
    [freed] = support.claim(sessions, limit=10)
    assert freed.id == second.id


def test_a_claim_whose_lease_ran_out_holds_its_account_no_more(engine, sessions):
    record(engine, incoming("evt_a1", account_id=1), incoming("evt_a2", account_id=1))
    [held] = support.claim(sessions, limit=1)
    assert support.claim(sessions, limit=10) == []
    later = held.lease_expires_at + timedelta(seconds=1)
    assert [c.delivery_id for c in support.claim(sessions, limit=10, now=later)] == ["evt_a2"]


def test_a_claim_takes_several_rows_of_one_account_together(engine, sessions):
    ids = [r.id for r in record(engine, *(incoming(account_id=7) for _ in range(3)))]
    assert sorted(c.id for c in support.claim_for_pass(sessions, ids=ids[1:], limit=10)) == ids


def test_a_claim_not_yet_committed_keeps_a_concurrent_claim_off_its_accounts(
    database_url, engine, sessions
):
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer at a time: a second claim waits for the first")
    record(engine, incoming("evt_a1", account_id=1))
    with transaction(sessions) as first:
        [held] = claiming.claim(first, now=utcnow(), lease=support.LEASE, limit=10)
        # Stored while the first claim is not committed: the second claim cannot see
        # evt_a1 processing yet, and must still leave account 1's row.
        [same, other] = record(
            engine, incoming("evt_a2", account_id=1), incoming("evt_b1", account_id=2)
        )
        assert [c.id for c in support.claim(sessions, limit=10)] == [other.id]
        assert support.claim_for_pass(sessions, ids=[same.id], limit=10) == []
    assert held.delivery_id == "evt_a1"


def test_a_claimed_row_is_built_from_the_claim_columns_in_field_order():
    from dataclasses import fields

    columns = [column.name for column in claiming._claimed_columns()]
    assert columns == [f.name for f in fields(claiming.ClaimedEvent)][: len(columns)]


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_claim_walks_the_due_index_and_finds_named_rows_by_id_whatever_the_statistics(
    engine, sessions
):
    """Statistics taken while nothing was in play put the pending rows at none. The claim
    still walks ix_webhook_events_due in claim order for its other rows, and looks the rows
    its message named up by primary key: it never reads every row in play (nor sorts them),
    and ix_webhook_events_in_line serves only the probe for an object's earlier rows."""
    ids = support.rows_in_play_the_statistics_never_saw(
        engine, sessions, finished=2000, pending=3000
    )
    now = utcnow()
    params = {
        "ids": ids[-3:],
        "now": now,
        "limit": 50,
        "owner": "w",
        "expires": now + support.LEASE,
    }
    with transaction(sessions) as session:
        claiming._WALK_THE_DUE_INDEX.rows(session)
        plan = support.plan_of(session, claiming._CLAIM_FOR_PASS, params)
        table, index = support.where_rows_are_now(session)
    pkey, due, in_line = (
        index.get(name, name)
        for name in ("webhook_events_pkey", "ix_webhook_events_due", "ix_webhook_events_in_line")
    )
    assert re.search(rf"using {pkey} on {table} named_candidate(_\d+)?\b", plan), plan
    assert re.search(rf"using {due} on {table} candidate(_\d+)?\b", plan), plan
    assert "Sort  (" not in plan, plan  # a Merge Append of partitions has a "Sort Key" only
    probes = re.findall(rf"using {in_line} on {table} (\w+)", plan)
    assert probes and all(alias.startswith("in_line") for alias in probes), plan


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_claim_is_never_compiled_by_jit(engine, sessions):
    """With sorts off, a Sort left over no rows by partition pruning costs 10^10, past
    jit_above_cost: JIT then compiled each claim for seconds, longer than a short lease."""
    params = {"ids": [], "now": utcnow(), "limit": 50, "owner": "w"}
    params["expires"] = params["now"] + support.LEASE
    with transaction(sessions) as session:
        claiming._WALK_THE_DUE_INDEX.rows(session)
        plan = support.plan_of(session, claiming._CLAIM_FOR_PASS, params)
        assert session.execute(text("SHOW jit")).scalar() == "off"
    assert "JIT:" not in plan, plan
