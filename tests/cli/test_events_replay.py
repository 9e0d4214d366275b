"""`outbox events replay`: what it puts back, what it refuses and why, its plan, pace and bell."""

from __future__ import annotations

from datetime import timedelta

import pytest

from outbox.cli.pacing import Pacer
from outbox.db import utcnow
from outbox.models import EventFailure, Source, Status
from tests.cli.conftest import claim_now, finish, kill, purged_event, row, skip, stored
from tests.cli.effects import grant
from tests.services import fresh_namespace


def failures(sessions, event_id):
    from sqlalchemy import select

    with sessions() as session:
        return list(session.scalars(select(EventFailure).where(EventFailure.event_id == event_id)))


def test_a_dead_event_is_pending_again_due_now_with_fresh_attempts(cli, engine, sessions):
    event_id = stored(engine)
    kill(sessions, event_id, "Stripe 500")
    before = utcnow()
    ran = cli("events", "replay", str(event_id))
    assert ran.code == 0, ran.stderr
    assert "replayed 1 event(s)" in ran.stdout
    replayed = row(sessions, event_id)
    assert replayed.status == Status.PENDING
    assert replayed.attempts == 0 and replayed.last_error is None
    assert replayed.processed_at is None
    assert before <= replayed.next_attempt_at <= utcnow()
    assert len(failures(sessions, event_id)) == 1  # the history of attempts is kept


def test_done_and_skipped_events_can_be_replayed_by_delivery_id(cli, engine, sessions):
    done = stored(engine, delivery_id="evt_done")
    finish(sessions, done)
    skipped = stored(engine, delivery_id="evt_skipped")
    skip(sessions, skipped)
    ran = cli("events", "replay", "evt_done", "evt_skipped")
    assert ran.code == 0
    assert row(sessions, done).status == row(sessions, skipped).status == Status.PENDING


def test_rows_still_in_play_are_refused_and_left_as_they_are(cli, engine, sessions):
    pending = stored(engine)
    processing = stored(engine)
    claim_now(sessions, processing)
    ran = cli("events", "replay", str(pending), str(processing))
    assert ran.code == 1
    assert f"refused {pending}: still pending" in ran.stdout
    assert f"refused {processing}: still processing" in ran.stdout
    assert "2 event(s) not replayed" in ran.stderr
    assert row(sessions, processing).status == Status.PROCESSING
    assert row(sessions, processing).attempts == 1  # its worker's attempt is not reset


def test_a_purged_event_is_refused_with_the_reason(cli, engine, sessions):
    event_id = purged_event(engine, sessions)
    ran = cli("events", "replay", str(event_id))
    assert ran.code == 1
    assert "purged" in ran.stdout and "body is gone" in ran.stdout
    tomb = row(sessions, event_id)
    assert tomb.status == Status.DONE and tomb.raw_body is None


def test_partial_replay_exits_1_naming_what_was_not_done(cli, engine, sessions):
    dead = stored(engine)
    kill(sessions, dead)
    pending = stored(engine)
    ran = cli("events", "replay", str(dead), str(pending), "evt_unknown")
    assert ran.code == 1
    assert "replayed 1 event(s)" in ran.stdout
    assert f"refused {pending}" in ran.stdout
    assert "no event has id or delivery id 'evt_unknown'" in ran.stdout
    assert row(sessions, dead).status == Status.PENDING


def test_replaying_twice_puts_a_row_back_once(cli, engine, sessions):
    event_id = stored(engine)
    kill(sessions, event_id)
    assert cli("events", "replay", str(event_id)).code == 0
    again = cli("events", "replay", str(event_id), "--json")
    assert again.code == 1
    [line] = again.json_lines()
    assert line["outcome"] == "refused" and "still pending" in line["reason"]


def test_a_filter_replays_only_the_matching_rows(cli, engine, sessions):
    now = utcnow()
    recent_dead = [stored(engine) for _ in range(3)]
    for event_id in recent_dead:
        kill(sessions, event_id)
    old_dead = stored(engine, now=now - timedelta(days=5))
    kill(sessions, old_dead)
    github_dead = stored(engine, source=Source.GITHUB)
    kill(sessions, github_dead)
    done = stored(engine)
    finish(sessions, done)
    ran = cli(
        "events", "replay", "--status", "dead", "--source", "stripe", "--since", "2d", "--yes",
        "--json",
    )  # fmt: skip
    assert ran.code == 0, ran.stderr
    assert sorted(r["id"] for r in ran.json_lines()) == recent_dead
    assert {r["outcome"] for r in ran.json_lines()} == {"replayed"}
    assert all(row(sessions, i).status == Status.PENDING for i in recent_dead)
    assert row(sessions, old_dead).status == Status.DEAD
    assert row(sessions, github_dead).status == Status.DEAD
    assert row(sessions, done).status == Status.DONE


def test_a_bulk_replay_asks_first_and_stops_on_no(cli, engine, sessions):
    for _ in range(2):
        kill(sessions, stored(engine))
    refused = cli("events", "replay", "--status", "dead", input="n\n")
    assert refused.code == 1
    assert "Replay 2 events?" in refused.stderr and "nothing replayed" in refused.stderr
    assert len(cli("events", "list", "--json", "--status", "dead").json_lines()) == 2
    accepted = cli("events", "replay", "--status", "dead", input="y\n")
    assert accepted.code == 0
    assert "replayed 2 event(s)" in accepted.stdout
    assert cli("events", "list", "--status", "dead").code == 1


def test_a_filter_without_status_takes_finished_rows_never_ones_in_play(cli, engine, sessions):
    dead = stored(engine, event_type="invoice.paid")
    kill(sessions, dead)
    pending = stored(engine, event_type="invoice.paid")
    ran = cli("events", "replay", "--type", "invoice.*", "--yes", "--json")
    assert ran.code == 0
    assert [r["id"] for r in ran.json_lines()] == [dead]
    assert row(sessions, pending).attempts == 0


def test_dry_run_prints_the_plan_with_effects_already_applied_and_changes_nothing(
    cli, engine, sessions, credits
):
    granted = stored(engine, delivery_id="evt_granted")
    grant(engine, granted, "pack:cs_1", "85")
    kill(sessions, granted)
    bare = stored(engine)
    kill(sessions, bare)
    in_play = stored(engine)
    ran = cli("events", "replay", "--dry-run", str(granted), str(bare), str(in_play))
    assert ran.code == 1  # one of them would be refused
    assert "would replay 2 event(s), refuse 1" in ran.stdout
    assert "fake_credits: id=1, key=pack:cs_1, amount=85.0000" in ran.stdout
    assert "still pending" in ran.stdout
    assert row(sessions, granted).status == row(sessions, bare).status == Status.DEAD
    plan = cli("events", "replay", "--dry-run", "--json", str(granted), str(bare)).json_lines()
    assert [(p["id"], p["action"]) for p in plan] == [(granted, "replay"), (bare, "replay")]
    assert [e["key"] for e in plan[0]["effects_applied"]] == ["pack:cs_1"]
    assert plan[1]["effects_applied"] == []


def test_dry_run_of_a_filter_needs_no_confirmation(cli, engine, sessions):
    for _ in range(3):
        kill(sessions, stored(engine))
    ran = cli("events", "replay", "--status", "dead", "--dry-run")
    assert ran.code == 0
    assert "would replay 3 event(s), refuse 0" in ran.stdout
    assert len(cli("events", "list", "--json", "--status", "dead").json_lines()) == 3


def test_a_bulk_replay_shows_progress_and_goes_at_the_rate_asked(cli, engine, sessions):
    made = [stored(engine) for _ in range(5)]
    for event_id in made:
        kill(sessions, event_id)
    ran = cli("events", "replay", "--status", "dead", "--yes", "--rate", "1000")
    assert ran.code == 0
    assert "replaying" in ran.stderr and "5/5" in ran.stderr
    assert all(row(sessions, i).status == Status.PENDING for i in made)


def test_without_a_broker_the_operator_is_told_the_sweeper_will_pick_them_up(cli, engine, sessions):
    event_id = stored(engine)
    kill(sessions, event_id)
    ran = cli("events", "replay", str(event_id))
    assert "could not ring the processors" in ran.stdout
    assert "the sweeper will pick them up" in ran.stdout
    assert ran.code == 0  # the row is pending: the sweeper finds it, nothing failed


@pytest.mark.redis
def test_with_redis_up_the_processors_are_rung_for_what_was_put_back(
    cli, engine, sessions, redis_url
):
    import redis

    namespace = fresh_namespace()
    event_id = stored(engine)
    kill(sessions, event_id)
    ran = cli("events", "replay", str(event_id), redis_url=redis_url, redis_namespace=namespace)
    assert ran.code == 0, ran.stderr
    assert "rang the processors for 1 event(s)" in ran.stdout
    client = redis.Redis.from_url(redis_url)
    try:
        keys = client.keys(f"{namespace}:*")
        assert keys, "no Dramatiq message in Redis"
        messages = [m for k in keys if client.type(k) == b"hash" for m in client.hvals(k)]
        assert any(f"[[{event_id}]]".encode() in m.replace(b" ", b"") for m in messages)
    finally:
        for key in client.keys(f"{namespace}:*"):
            client.delete(key)


def test_usage_errors_exit_2(cli, engine, sessions):
    nothing = cli("events", "replay")
    assert nothing.code == 2 and "name the events to replay" in nothing.stderr
    both = cli("events", "replay", "1", "--status", "dead")
    assert both.code == 2 and "not both" in both.stderr
    in_play = cli("events", "replay", "--status", "pending")
    assert in_play.code == 2 and "already waiting" in in_play.stderr
    assert cli("events", "replay", "--status", "dead", "--since", "yesterday").code == 2
    assert cli("events", "replay", "1", "--rate", "0").code == 2


def test_a_filter_matching_nothing_exits_1(cli, engine):
    stored(engine)
    ran = cli("events", "replay", "--status", "dead", "--yes")
    assert ran.code == 1 and "no events match" in ran.stderr


def test_pacer_waits_so_the_rate_is_never_exceeded():
    now = [100.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    pacer = Pacer(10, clock=lambda: now[0], sleep=sleep)
    assert pacer.batch_size == 10
    pacer.finished(10)  # 10 items took no time: wait the rest of the second
    assert waits == [pytest.approx(1.0)]
    now[0] += 2.5  # slow work: already behind, no wait
    pacer.finished(10)
    assert waits == [pytest.approx(1.0)]
    pacer.finished(10)  # 30 items by t=3.5 at 10/s: due at 3.0, no wait
    pacer.finished(10)  # 40 items: due at 4.0
    assert waits[1:] == [pytest.approx(0.5)]


def test_pacer_batches_are_about_a_second_of_work_and_never_empty():
    assert Pacer(0.5).batch_size == 1
    assert Pacer(20).batch_size == 20
    assert Pacer(5000).batch_size == 100
    with pytest.raises(ValueError):
        Pacer(0)


def test_replay_limit_takes_the_oldest_matches_first(cli, engine, sessions):
    made = [stored(engine) for _ in range(3)]
    for event_id in made:
        kill(sessions, event_id)
    ran = cli("events", "replay", "--status", "dead", "--limit", "2", "--yes", "--json")
    assert ran.code == 0
    assert [r["id"] for r in ran.json_lines()] == made[:2]
    assert row(sessions, made[2]).status == Status.DEAD


def test_verdicts_for_thousands_of_ids_come_one_per_id_in_the_order_asked(engine, sessions, reads):
    from outbox.queries import replay_verdicts

    dead = stored(engine)
    kill(sessions, dead)
    asked = [*range(12_500, 10_000, -1), dead]
    verdicts = replay_verdicts(reads, asked)
    assert [v.id for v in verdicts] == asked
    assert verdicts[-1].replayable
    assert {v.refusal for v in verdicts[:-1]} == {"no such event"}
