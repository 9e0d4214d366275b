"""The console in a real browser: Debian's chromium, headless, driven by Playwright, against
`outbox console` and `outbox worker` as real processes on a private Postgres database and
Redis namespace.

Skipped when chromium is not installed, except under CI, where it must run (.ci/run
installs it). Screenshots of the main pages go to $CONSOLE_SCREENSHOTS (default: a pytest
temporary directory).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from domain.account_opening import ensure_account
from outbox.db import make_engine, make_sessionmaker, transaction, utcnow
from outbox.migrate import upgrade
from tests.cli.conftest import finish, kill, row, stored
from tests.conftest import IN_CI, create_postgres_database, drop_postgres_database
from tests.console.hostile import SCRIPT, store_hostile
from tests.factories import record
from tests.processors.handlers import (
    HANDLER_TABLE,
    create_effects_table,
    effect_counts,
    scripted_event,
)
from tests.services import (
    WORKER_READY,
    OutboxProcess,
    free_port,
    fresh_namespace,
    outbox_env,
    wait_until,
)

# One worker of pytest-xdist runs them all: the world (processes, browser) is set up once.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.xdist_group("console-browser"),
]

CHROMIUM = os.environ.get("CONSOLE_CHROMIUM", "/usr/bin/chromium")
TOKEN = "browser-test-token-0123456789abcdef"
ACCOUNT = 777001


def _chromium_or_skip() -> None:
    if Path(CHROMIUM).exists() or shutil.which(CHROMIUM):
        return
    reason = f"chromium is not installed ({CHROMIUM}): `apt-get install chromium` to run these"
    if IN_CI:
        pytest.fail(reason + " (CI must run them: .ci/run installs it)")
    pytest.skip(reason)


@dataclass
class World:
    url: str
    env: dict[str, str]
    engine: Engine
    dead: list[int]
    timeline: list[int]
    hostile: list[int]
    shots: Path


@pytest.fixture(scope="module")
def world(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The database filled and the console running (the worker only where it is needed)."""
    _chromium_or_skip()
    url = create_postgres_database("outbox_console")
    engine = make_engine(url, pool_size=2)
    console = None
    try:
        upgrade(url)
        create_effects_table(engine)
        sessions = make_sessionmaker(engine)
        now = utcnow()
        dead = [result.id for result in record(engine, *[scripted_event() for _ in range(3)])]
        for event_id in dead:
            kill(sessions, event_id, error="the test says: provider unreachable")
        for n in range(4):
            finish(sessions, stored(engine, source="github", event_type=f"push.{n}"))
        timeline = []
        for minutes in (30, 20, 10):
            event_id = stored(
                engine, object_id="sub_timeline", event_type="customer.subscription.updated",
                created=now - timedelta(minutes=minutes),
            )  # fmt: skip
            finish(sessions, event_id)
            timeline.append(event_id)
        hostile = store_hostile(engine, sessions)
        with transaction(sessions) as session:
            ensure_account(session, ACCOUNT, login="octo-console", kind="Organization",
                           now=now, welcome_credits=Decimal("50"))  # fmt: skip
        env = outbox_env(
            url, redis_url=redis_url, namespace=fresh_namespace(), handler_table=HANDLER_TABLE,
            console_token=TOKEN, stripe_mode="any",
        )  # fmt: skip
        port = free_port()
        console = OutboxProcess(["console", "--port", str(port)], env, port=port)
        console.start()
        shots = Path(os.environ.get("CONSOLE_SCREENSHOTS") or tmp_path_factory.mktemp("shots"))
        shots.mkdir(parents=True, exist_ok=True)
        yield World(f"http://127.0.0.1:{port}", env, engine, dead, timeline, hostile, shots)
    finally:
        if console is not None:
            console.kill()
        engine.dispose()
        drop_postgres_database(url)


@pytest.fixture(scope="module")
def browser(world: World) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class Tab:
    page: Any
    dialogs: list[str]
    problems: list[str]


@pytest.fixture(scope="module")
def tab(browser: Any, world: World) -> Iterator[Tab]:
    """One signed-in tab; every dialog (alert) and console error it sees is recorded."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    seen = Tab(page, [], [])
    page.on("dialog", lambda dialog: (seen.dialogs.append(dialog.message), dialog.dismiss()))
    page.on("console", lambda m: seen.problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda error: seen.problems.append(str(error)))
    page.goto(world.url + "/")
    assert "/login" in page.url
    page.fill("input[name=token]", TOKEN)
    page.click("button[type=submit]")
    page.wait_for_url(world.url + "/")
    yield seen
    context.close()


def shot(world: World, tab: Tab, name: str) -> None:
    tab.page.screenshot(path=str(world.shots / f"{name}.png"), full_page=True)


def test_sign_in_is_needed_and_sets_a_secure_http_only_strict_cookie(
    browser: Any, world: World, tab: Tab
) -> None:
    stranger = browser.new_context()
    page = stranger.new_page()
    page.goto(world.url + "/events?status=dead")
    assert "/login?next=" in page.url
    page.fill("input[name=token]", "not-the-token-at-all")
    page.click("button[type=submit]")
    assert "not the console's token" in page.inner_text(".error")
    shot(world, Tab(page, [], []), "login")
    page.fill("input[name=token]", TOKEN)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/events\?status=dead$"))
    [cookie] = [c for c in stranger.cookies() if c["name"] == "outbox_console"]
    assert cookie["secure"] and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    stranger.close()
    tab.page.goto(world.url + "/")
    assert tab.page.inner_text("h1") == "Overview"
    assert tab.page.locator("svg rect.bar").count() > 0
    shot(world, tab, "overview")


def test_filtering_puts_the_filters_in_a_shareable_url(world: World, tab: Tab) -> None:
    page = tab.page
    page.goto(world.url + "/events")
    page.check("input[name=status][value=done]")
    page.fill("input[name=type]", "push.*")
    page.click("form.filters button[type=submit]")
    page.wait_for_url(re.compile(r".*status=done.*type=push\.\*"))
    types = page.locator("table.listing td.type").all_inner_texts()
    assert sorted(types) == ["push.0", "push.1", "push.2", "push.3"]
    shared = page.url
    page.goto(world.url + "/")
    page.goto(shared)
    assert page.locator("input[name=status][value=done]").is_checked()
    assert page.input_value("input[name=type]") == "push.*"
    shot(world, tab, "events")


def test_an_event_shows_its_objects_timeline_in_created_order(world: World, tab: Tab) -> None:
    page = tab.page
    middle = world.timeline[1]
    page.goto(f"{world.url}/events/{middle}")
    links = page.locator("#timeline li a").all_inner_texts()
    assert links == [str(i) for i in world.timeline]
    assert "(this event)" in page.inner_text("#timeline li.current")
    assert '"type": "customer.subscription.updated"' in page.inner_text("#payload")
    shot(world, tab, "event")


@pytest.fixture
def worker(world: World) -> Iterator[OutboxProcess]:
    """One real `outbox worker` on the world's database and Redis namespace."""
    process = OutboxProcess(["worker", "-p", "1", "-t", "1"], world.env)
    process.start()
    try:
        process.wait_for_output(WORKER_READY, timeout=60)
        yield process
    finally:
        process.kill()


def test_a_dry_run_then_a_replay_that_the_worker_applies(
    world: World, tab: Tab, worker: OutboxProcess
) -> None:
    page = tab.page
    page.goto(world.url + "/events?status=dead&type=test.effect")
    page.check("input[data-select-all]")  # the console's one script selects every row
    assert page.locator("input[name=id]:checked").count() == len(world.dead)
    page.click("#selection button[type=submit]")
    page.wait_for_url(re.compile(r".*/replay\?id="))
    assert f"Would replay {len(world.dead)} event(s), refuse 0." in page.inner_text("#plan-summary")
    assert effect_counts(world.engine) == {}  # a dry run changes nothing
    shot(world, tab, "replay-plan")
    page.click("#confirm button[type=submit]")
    page.wait_for_selector('#run-state[data-finished="yes"]', timeout=20_000)
    assert f"Replayed {len(world.dead)} event(s)" in page.inner_text("#run-state")
    wait_until(
        lambda: set(effect_counts(world.engine)) == set(world.dead), timeout=30,
        what="the worker applying the replayed events",
    )  # fmt: skip
    sessions = make_sessionmaker(world.engine)
    wait_until(lambda: {row(sessions, i).status for i in world.dead} == {"done"}, timeout=30)
    shot(world, tab, "replay-run")
    page.goto(f"{world.url}/events/{world.dead[0]}")
    assert page.inner_text("h1 .status") == "done"


def test_hostile_strings_run_nothing_and_break_no_page(world: World, tab: Tab) -> None:
    page = tab.page
    first, second = world.hostile
    for path in ("/", "/events", "/events?status=dead", f"/events/{first}",
                 f"/replay?id={first}&id={second}"):  # fmt: skip
        page.goto(world.url + path)
        assert page.evaluate("window.__pwned === undefined"), path
        assert page.locator("img, main svg[onload], [onerror], [onfocus]").count() == 0, path
        assert page.locator("header.top nav a").count() == 4, path  # the layout is whole
    page.goto(f"{world.url}/events/{first}")
    assert SCRIPT in page.inner_text("h1")  # shown as text, exactly as stored
    assert "\\x1b[31mred" in page.inner_text("#failures")
    assert page.locator("#timeline li").count() == 2
    shot(world, tab, "hostile-event")
    assert tab.dialogs == []
    assert [p for p in tab.problems if "Content Security Policy" in p] == []


def test_the_account_and_attention_pages(world: World, tab: Tab) -> None:
    page = tab.page
    page.goto(world.url + "/")
    page.fill("form.lookup input[name=ref]", "octo-console")
    page.click("form.lookup button")
    page.wait_for_url(re.compile(r".*/accounts/octo-console$"))
    assert page.inner_text("#balance").startswith("50")
    assert f"welcome:{ACCOUNT}" in page.inner_text("#ledger")
    shot(world, tab, "account")
    page.goto(world.url + "/attention")
    assert "Failed jobs" in page.inner_text("main")
    shot(world, tab, "attention")
