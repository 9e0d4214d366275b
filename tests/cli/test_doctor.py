"""`outbox doctor`: one line per check against a real database and Redis, with GitHub and
Stripe answered by respx; exit 1 when any check fails."""

from __future__ import annotations

from decimal import Decimal

import httpx
import jwt
import psycopg
import pytest
import respx
from cryptography.hazmat.primitives import serialization

from domain.packs import PackSpec, set_pack
from outbox.db import transaction, utcnow
from tests.cli.conftest import NO_REDIS
from tests.fakes.github import throwaway_private_key

GITHUB_API = "https://api.github.test"
STRIPE_EVENTS = "https://api.stripe.com/v1/events"
APP_ID = "123456"


@pytest.fixture
def app_key(tmp_path):
    key = throwaway_private_key()
    path = tmp_path / "app.pem"
    path.write_text(key)
    return key, path


@pytest.fixture
def healthy(redis_url, app_key, sessions):
    """A deployment where every check passes: the environment and one pack on sale."""
    with transaction(sessions) as session:
        set_pack(session, PackSpec("price_pack_25", "Starter", Decimal("25")), now=utcnow())
    return {
        "redis_url": redis_url,
        "github_app_id": APP_ID,
        "github_app_private_key_file": str(app_key[1]),
        "github_api_url": GITHUB_API,
        "stripe_api_key": "sk_test_doctor",
        "stripe_mode": "test",
    }


def github_accepting_only(public_key) -> respx.Route:
    """GET /app that answers the App only for a JWT signed by its key, issued for its id."""

    def answer(request: httpx.Request) -> httpx.Response:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        try:
            claims = jwt.decode(token, public_key, algorithms=["RS256"])
        except jwt.PyJWTError:
            return httpx.Response(401, json={"message": "A JSON web token could not be decoded"})
        return httpx.Response(200, json={"id": int(claims["iss"]), "slug": "outbox-app"})

    return respx.get(f"{GITHUB_API}/app").mock(side_effect=answer)


def stripe_events(status: int = 200) -> respx.Route:
    body = (
        {"object": "list", "data": [], "has_more": False, "url": "/v1/events"}
        if status == 200
        else {"error": {"type": "invalid_request_error", "message": "Invalid API Key"}}
    )
    return respx.get(STRIPE_EVENTS).mock(return_value=httpx.Response(status, json=body))


def public_key_of(pem: str):
    return serialization.load_pem_private_key(pem.encode(), password=None).public_key()


def server_autovacuum(database_url: str) -> str | None:
    """What the doctor's autovacuum line must say: None on SQLite (no line), else ok or warn
    as the Postgres server running the tests is configured (this machine's may run with
    autovacuum off)."""
    if database_url.startswith("sqlite"):
        return None
    conninfo = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo) as conn:
        row = conn.execute(
            "SELECT current_setting('autovacuum')::boolean"
            " AND current_setting('track_counts')::boolean"
        ).fetchone()
    return "ok" if row and row[0] else "warn"


@respx.mock
def test_a_healthy_deployment_passes_every_check_one_line_each(cli, healthy, app_key, database_url):
    app_route = github_accepting_only(public_key_of(app_key[0]))
    stripe_route = stripe_events()
    ran = cli("doctor", **healthy)
    assert ran.code == 0, ran.stdout + ran.stderr
    lines = ran.stdout.strip().splitlines()
    vacuum = server_autovacuum(database_url)
    if vacuum is not None:
        vacuum_line = lines.pop(2)
        assert vacuum_line.split()[:2] == [vacuum, "autovacuum"]
        assert vacuum == "ok" or "turn autovacuum on" in vacuum_line
    assert [line.split()[0] for line in lines] == ["ok"] * 9
    assert lines[0].startswith("ok   database") and lines[1].startswith("ok   migrations")
    assert any("App 123456 (outbox-app) accepts its JWT" in line for line in lines)
    assert any("1 pack(s) on sale" in line for line in lines)
    assert app_route.call_count == 1 and stripe_route.call_count == 1
    assert stripe_route.calls.last.request.headers["authorization"] == "Bearer sk_test_doctor"


@respx.mock
def test_json_gives_one_object_per_check(cli, healthy, app_key):
    github_accepting_only(public_key_of(app_key[0]))
    stripe_events()
    ran = cli("doctor", "--json", **healthy)
    rows = [row for row in ran.json_lines() if row["name"] != "autovacuum"]
    assert ran.code == 0
    assert {row["name"] for row in rows} == {
        "database",
        "migrations",
        "redis",
        "github webhook secret",
        "stripe webhook secret",
        "github app",
        "stripe api key",
        "stripe mode",
        "pack catalog",
    }
    assert all(set(row) == {"name", "verdict", "detail", "fix"} for row in rows)


@respx.mock
def test_a_key_of_another_app_fails_the_github_check_with_what_to_do(cli, healthy):
    github_accepting_only(public_key_of(throwaway_private_key()))  # GitHub knows another key
    stripe_events()
    ran = cli("doctor", **healthy)
    assert ran.code == 1
    [line] = [x for x in ran.stdout.splitlines() if "github app" in x]
    assert line.startswith("FAIL github app")
    assert "GET /app answered 401 to the App's JWT" in line
    assert "check GITHUB_APP_ID" in line


@respx.mock
def test_every_failure_is_named_and_the_other_checks_still_run(cli, tmp_path):
    stripe_events(status=401)
    bad_key = tmp_path / "bad.pem"
    bad_key.write_text("not a key")
    ran = cli(
        "doctor",
        redis_url=NO_REDIS,
        github_webhook_secret=None,
        stripe_webhook_secret="sk_live_oops",
        github_app_id=APP_ID,
        github_app_private_key_file=str(bad_key),
        github_api_url=GITHUB_API,
        stripe_api_key="sk_live_wrong",
        stripe_mode="test",
    )
    assert ran.code == 1
    verdicts = {" ".join(x.split()[1:3]): x for x in ran.stdout.splitlines()}
    failed = {name for name, line in verdicts.items() if line.startswith("FAIL")}
    assert failed == {
        "redis redis://127.0.0.1:1/0",
        "github webhook",
        "stripe webhook",
        "github app",
        "stripe api",
        "stripe mode",
    }
    assert "start Redis or set REDIS_URL" in verdicts["redis redis://127.0.0.1:1/0"]
    assert "does not start with whsec_" in verdicts["stripe webhook"]
    assert "cannot sign a JWT" in verdicts["github app"]
    assert "Stripe refused the key (401)" in verdicts["stripe api"]
    assert "STRIPE_MODE=test but STRIPE_API_KEY is a live-mode key" in verdicts["stripe mode"]
    assert verdicts["pack catalog"].startswith("warn")  # a warning, not a failure


def test_an_unmigrated_database_fails_with_the_migrate_hint(cli, tmp_path):
    ran = cli("doctor", database_url=f"sqlite:///{tmp_path / 'new.db'}", redis_url=NO_REDIS)
    assert ran.code == 1
    [line] = [x for x in ran.stdout.splitlines() if " migrations " in x]
    assert line.startswith("FAIL migrations")
    assert "database not migrated: run `outbox migrate`" in line


def test_an_unreachable_database_fails_both_database_checks(cli):
    ran = cli(
        "doctor", database_url="postgresql+psycopg://postgres@127.0.0.1:1/x", redis_url=NO_REDIS
    )
    assert ran.code == 1
    lines = ran.stdout.splitlines()
    assert lines[0].startswith("FAIL database") and "unreachable" in lines[0]
    assert lines[1].startswith("FAIL migrations") and "not checked" in lines[1]


def test_stripe_mode_any_is_a_warning(cli):
    ran = cli("doctor", "--json", redis_url=NO_REDIS, stripe_mode="any")
    [mode] = [row for row in ran.json_lines() if row["name"] == "stripe mode"]
    assert mode["verdict"] == "warn" and "applies test and live events alike" in mode["detail"]
