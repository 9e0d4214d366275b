"""What each page shows, read through the CLI's named operations, on SQLite and Postgres."""

from __future__ import annotations

import re
import time
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.testclient import TestClient

from domain.account_opening import ensure_account
from outbox.db import transaction, utcnow
from tests.cli.conftest import claim_now, finish, kill, purged_event, row, skip, stored
from tests.console.conftest import HTML, form_token


def ids_listed(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'<td class="num"><a href="/events/(\d+)">', html)]


def test_the_overview_counts_by_source_and_status_and_charts_the_last_hours(
    client: TestClient, engine: Engine, sessions: sessionmaker[Session]
) -> None:
    done = stored(engine)
    finish(sessions, done)
    dead = stored(engine, source="github", event_type="push")
    kill(sessions, dead, error="it broke")
    stored(engine, now=utcnow() - timedelta(minutes=7))  # due for 7 minutes
    body = client.get("/").text
    counts = body.split('id="counts"')[1].split("</table>")[0]
    assert re.search(r"<td>github</td>.*?>1</a>", counts, re.S)
    assert 'id="dead-last-day">1<' in body
    assert re.search(r'id="lag">7m \d+s<', body)
    assert body.count('class="bar bar-') >= 3  # done, dead and pending, this minute and 7 ago
    assert "it broke" in body  # the dead row listed


def test_the_overview_says_which_counts_are_estimates_on_a_large_table(
    client: TestClient, engine: Engine, sessions: sessionmaker[Session], monkeypatch
) -> None:
    """Above EXACT_COUNT_ROWS the finished rows are one estimate for every source: the
    overview shows no per-source figure for them, and says the figure is an estimate."""
    from outbox import queries

    dead = stored(engine, source="github", event_type="push")
    kill(sessions, dead, error="it broke")
    finish(sessions, stored(engine))
    counted = queries.event_stats

    def estimated(db, *, now):  # type: ignore[no-untyped-def]
        stats = counted(db, now=now)
        in_play = {k: n for k, n in stats.counts.items() if k[1] not in ("done", "skipped")}
        return replace(stats, counts=in_play, finished_estimate=1_234_567)

    monkeypatch.setattr(queries, "event_stats", estimated)
    body = client.get("/").text
    counts = body.split('id="counts"')[1].split("</table>")[0]
    assert re.search(r"<td>github</td>.*?>1</a>", counts, re.S)  # the dead row, exact
    assert counts.count('<td class="num dim">–</td>') == 2 * counts.count("<tr><td>")
    assert re.search(r'id="finished-estimate">[^<]*≈ 1234567 ', body)


def test_the_events_page_filters_like_the_cli_and_pages_by_id(
    client: TestClient, engine: Engine, sessions: sessionmaker[Session]
) -> None:
    invoices = [stored(engine, event_type=f"invoice.{n}") for n in range(53)]
    other = stored(engine, event_type="customer.created")
    first = client.get("/events?type=invoice.*&source=stripe")
    assert first.status_code == 200
    page_one = ids_listed(first.text)
    assert page_one == sorted(invoices, reverse=True)[:50]
    assert other not in page_one
    older = re.search(r'href="/events\?([^"]+)" rel="next"', first.text)
    assert older is not None
    query = older.group(1).replace("&amp;", "&")
    assert "type=invoice.%2A" in query and "source=stripe" in query
    assert ids_listed(client.get(f"/events?{query}").text) == sorted(invoices)[:3][::-1]
    assert ids_listed(client.get("/events?since=1h&type=customer.*").text) == [other]


def test_a_listing_stopped_by_its_time_budget_says_so_and_links_further_back(
    client: TestClient, engine: Engine, monkeypatch
) -> None:
    """On a partitioned table a filter no index serves reads partitions newest first for
    at most LIST_SCAN_BUDGET (queries.list_page); the page then says from when it searched
    and links the same filters with the `until` that continues."""
    from outbox import queries
    from outbox.query_results import EventPage

    found = stored(engine, event_type="invoice.paid")
    listed = queries.list_page
    since = utcnow().replace(microsecond=0) - timedelta(days=2)

    def stopped(db, where, **kwargs):  # type: ignore[no-untyped-def]
        return EventPage(listed(db, where, **kwargs).rows, complete=False, searched_since=since)

    monkeypatch.setattr(queries, "list_page", stopped)
    body = client.get("/events?type=invoice.*&until=1h").text
    assert ids_listed(body) == []  # received now, after --until 1h
    partial = body.split('id="partial"')[1].split("</p>")[0]
    assert f"since {since:%Y-%m-%dT%H:%M:%S} UTC" in partial
    link = re.search(r'href="/events\?([^"]+)"', partial)
    assert link is not None
    query = link.group(1).replace("&amp;", "&")
    assert "type=invoice.%2A" in query and query.count("until=") == 1
    assert f"until={since:%Y-%m-%dT%H%%3A%M%%3A%S}" in query
    monkeypatch.setattr(queries, "list_page", listed)
    assert ids_listed(client.get("/events?type=invoice.*").text) == [found]
    assert 'id="partial"' not in client.get("/events?type=invoice.*").text


def test_bad_filters_are_refused_with_the_clis_reason(client: TestClient) -> None:
    for query, reason in (
        ("status=alive", "status &#39;alive&#39; is not one of"),
        ("since=yesterday", "bad time for --since"),
        ("since=1h&until=2h", "is not before --until"),
        ("account=nobody", "no account with login or id"),
        ("before_id=-3", "before_id"),
    ):
        answer = client.get(f"/events?{query}", headers=HTML)
        assert answer.status_code in (400,), query
        assert reason in answer.text, (query, answer.text)
    assert client.get("/events?status=alive").json()["error"].startswith("status 'alive'")


def test_an_event_shows_its_attempts_and_its_objects_timeline_in_created_order(
    client: TestClient, engine: Engine, sessions: sessionmaker[Session]
) -> None:
    now = utcnow()
    later = stored(engine, object_id="sub_1", event_type="customer.subscription.updated",
                   created=now - timedelta(minutes=1))  # fmt: skip
    kill(sessions, later, error="Stripe said no")
    earlier = stored(engine, object_id="sub_1", event_type="customer.subscription.created",
                     created=now - timedelta(minutes=5))  # fmt: skip
    stored(engine, object_id="sub_2")
    body = client.get(f"/events/{later}").text
    assert "Stripe said no" in body.split('id="failures"')[1]
    timeline = body.split('id="timeline"')[1].split("</ol>")[0]
    assert re.findall(r'href="/events/(\d+)"', timeline) == [str(earlier), str(later)]
    assert "&#34;type&#34;: &#34;customer.subscription.updated&#34;" in body  # the payload


def test_an_account_page_shows_credits_ledger_and_subscriptions(
    client: TestClient, sessions: sessionmaker[Session]
) -> None:
    with transaction(sessions) as session:
        ensure_account(session, 4242, login="octo-org", kind="Organization", now=utcnow(),
                       welcome_credits=Decimal("50"))  # fmt: skip
    for ref in ("4242", "OCTO-org"):
        body = client.get(f"/accounts/{ref}").text
        assert "octo-org" in body
        assert re.search(r'id="balance">50(\.0+)?<', body)
        assert "welcome:4242" in body.split('id="ledger"')[1]
    lookup = client.get("/accounts?ref=octo-org", follow_redirects=False)
    assert lookup.headers["location"] == "/accounts/octo-org"


def test_the_attention_page_lists_failed_jobs_and_unreported_usage(client: TestClient) -> None:
    body = client.get("/attention").text
    assert "Failed jobs" in body and "Usage records Stripe does not have yet" in body


def test_a_dry_run_shows_the_clis_refusals_and_changes_nothing(
    client: TestClient, engine: Engine, sessions: sessionmaker[Session]
) -> None:
    done = stored(engine)
    finish(sessions, done)
    pending = stored(engine)
    processing = stored(engine)
    claim_now(sessions, processing)
    purged = purged_event(engine, sessions)
    body = client.get(f"/replay?id={done}&id={pending},{processing}&id={purged}&id=evt_none").text
    assert "Would replay 1 event(s), refuse 4." in body
    assert "still pending: it is already waiting to be processed" in body
    assert "still processing" in body
    assert "purged (" in body and "its body is gone" in body
    assert "unknown: no event has id or delivery id &#39;evt_none&#39;" in body
    assert f'name="ids" value="{done}"' in body
    assert row(sessions, done).status == "done"
    refused = client.get("/replay?status=pending", headers=HTML)
    assert refused.status_code == 400 and "already waiting to be processed" in refused.text


def test_a_confirmed_replay_puts_the_planned_rows_back_paced(
    client: TestClient, engine: Engine, sessions: sessionmaker[Session]
) -> None:
    skipped = [stored(engine, event_type="ping") for _ in range(3)]
    for event_id in skipped:
        skip(sessions, event_id)
    plan = client.get("/replay?type=ping")
    assert "Would replay 3 event(s), refuse 0." in plan.text
    ids = re.search(r'name="ids" value="([^"]+)"', plan.text)
    assert ids is not None
    answer = client.post(
        "/replay", data={"csrf": form_token(plan.text), "ids": ids.group(1)}, follow_redirects=False
    )
    assert answer.status_code == 303
    run_page = answer.headers["location"]
    deadline = time.monotonic() + 10
    while 'data-finished="yes"' not in (body := client.get(run_page).text):
        assert time.monotonic() < deadline, body
        time.sleep(0.05)
    assert "Replayed 3 event(s)" in body
    assert "could not ring the processors" in body  # no Redis here: the sweeper finds them
    assert {row(sessions, i).status for i in skipped} == {"pending"}


def test_a_database_that_does_not_answer_is_a_503_with_its_reason(
    client: TestClient, engine: Engine
) -> None:
    from sqlalchemy import text

    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE webhook_events RENAME TO webhook_events_gone"))
    try:
        answer = client.get("/", headers=HTML)
        assert answer.status_code == 503
        assert "the database did not answer" in answer.text
    finally:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE webhook_events_gone RENAME TO webhook_events"))
