"""`outbox reconcile github`: failed App deliveries we never stored are redelivered, once asked."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import count

import httpx
import jwt
import pytest
import respx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from outbox.models import Source
from outbox.reconcile import Delivery, plan_redeliveries
from tests.cli.conftest import stored

API = "https://api.github.com"
DELIVERIES = f"{API}/app/hook/deliveries"
APP_ID = "123456"
_ids = count(1000)


@pytest.fixture(scope="module")
def app_key() -> rsa.RSAPrivateKey:
    """A throwaway App key: the JWT is really signed, and checked against its public half."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def github_cli(cli, app_key):
    pem = app_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()

    def run(*args: str, **env: str | None):
        env = {"github_app_id": APP_ID, "github_app_private_key": pem, **env}
        return cli("reconcile", "github", *args, **env)

    return run


def delivery(guid: str, code: int, *, ago: timedelta, redelivery: bool = False) -> dict:
    at = datetime.now(UTC) - ago
    return {
        "id": next(_ids),
        "guid": guid,
        "delivered_at": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "redelivery": redelivery,
        "duration": 0.27,
        "status": "OK" if 200 <= code < 300 else "Invalid HTTP Response: 503",
        "status_code": code,
        "event": "pull_request",
        "action": "opened",
        "installation_id": 42,
        "repository_id": 7,
    }


def pages(*contents: list[dict]):
    """A side effect answering GitHub's cursor paging: page n links to page n+1."""

    def answer(request: httpx.Request) -> httpx.Response:
        cursor = request.url.params.get("cursor")
        index = int(cursor) if cursor else 0
        headers = {}
        if index + 1 < len(contents):
            headers["Link"] = f'<{DELIVERIES}?per_page=100&cursor={index + 1}>; rel="next"'
        return httpx.Response(200, json=contents[index], headers=headers)

    return answer


H = timedelta(hours=1)


@respx.mock
def test_only_failed_deliveries_never_stored_nor_delivered_since_are_redelivered(
    github_cli, engine, app_key
):
    lost_retry = delivery("guid-lost", 503, ago=1 * H, redelivery=True)
    lost_first = delivery("guid-lost", 503, ago=5 * H)
    healed = delivery("guid-healed", 200, ago=2 * H, redelivery=True)
    healed_first = delivery("guid-healed", 500, ago=6 * H)
    answered_late = delivery("guid-stored", 504, ago=3 * H)  # timed out after our commit
    fine = delivery("guid-fine", 200, ago=4 * H)
    too_old = delivery("guid-too-old", 500, ago=80 * H)
    stored(engine, source=Source.GITHUB, delivery_id="guid-stored")
    listing = respx.get(DELIVERIES).mock(
        side_effect=pages(
            [lost_retry, healed, answered_late], [fine, lost_first, healed_first, too_old], []
        )
    )
    redelivered = respx.post(url__regex=rf"{DELIVERIES}/\d+/attempts").mock(
        return_value=httpx.Response(202, json={})
    )
    ran = github_cli("--since", "3d", "--json")
    assert ran.code == 0, ran.stderr
    assert [c.request.url.path for c in redelivered.calls] == [
        f"/app/hook/deliveries/{lost_retry['id']}/attempts"  # the latest failed attempt, once
    ]
    assert listing.call_count == 2  # paging stopped at the first delivery older than --since
    decisions = {r["guid"]: r["decision"] for r in ran.json_lines()}
    assert decisions == {
        "guid-lost": "redeliver",
        "guid-healed": "delivered since",
        "guid-stored": "already stored",
    }
    token = listing.calls[0].request.headers["authorization"].removeprefix("Bearer ")
    claims = jwt.decode(token, app_key.public_key(), algorithms=["RS256"])
    assert str(claims["iss"]) == APP_ID


@respx.mock
def test_dry_run_asks_github_for_nothing(github_cli, engine):
    respx.get(DELIVERIES).mock(side_effect=pages([delivery("guid-a", 500, ago=H)]))
    post = respx.post(url__regex=rf"{DELIVERIES}/\d+/attempts")
    ran = github_cli("--dry-run")
    assert ran.code == 0
    assert post.call_count == 0
    assert "would redeliver" in ran.stdout and "1 to redeliver (dry run)" in ran.stdout


@respx.mock
def test_nothing_failed_is_success_with_nothing_asked(github_cli, engine):
    respx.get(DELIVERIES).mock(side_effect=pages([delivery("guid-ok", 200, ago=H)]))
    ran = github_cli()
    assert ran.code == 0
    assert "0 webhook(s) failed at least once" in ran.stdout


@respx.mock
def test_a_refused_redelivery_is_a_partial_failure_naming_the_guid(github_cli, engine):
    respx.get(DELIVERIES).mock(
        side_effect=pages([delivery("guid-refused", 500, ago=H), delivery("guid-ok", 502, ago=H)])
    )
    answers = iter([422, 202])
    respx.post(url__regex=rf"{DELIVERIES}/\d+/attempts").mock(
        side_effect=lambda request: httpx.Response(
            next(answers), json={"message": "Validation Failed"}
        )
    )
    ran = github_cli()
    assert ran.code == 1
    assert "GitHub refused 1 redelivery request(s)" in ran.stderr
    assert "422 Unprocessable Entity: Validation Failed" in ran.stdout


@respx.mock
def test_a_listing_refused_by_github_exits_1_with_its_message(github_cli, engine):
    respx.get(DELIVERIES).mock(
        return_value=httpx.Response(401, json={"message": "A JSON web token could not be decoded"})
    )
    ran = github_cli()
    assert ran.code == 1
    assert "401 Unauthorized: A JSON web token could not be decoded" in ran.stderr
    assert "Traceback" not in ran.stderr


def test_usage_errors_exit_2(github_cli, cli, engine):
    too_far = github_cli("--since", "4d")
    assert too_far.code == 2 and "3 days" in too_far.stderr
    unset = cli("reconcile", "github")
    assert unset.code == 2 and "GITHUB_APP_ID" in unset.stderr


def test_the_plan_looks_at_every_attempt_of_a_webhook():
    at = datetime(2026, 12, 1, tzinfo=UTC)

    def attempt(guid: str, code: int, minutes: int) -> Delivery:
        return Delivery(next(_ids), guid, at + timedelta(minutes=minutes), "x", code,
                        "push", None, minutes > 0)  # fmt: skip

    plan = plan_redeliveries(
        [attempt("a", 500, 0), attempt("a", 502, 5), attempt("b", 200, 0), attempt("c", 500, 1)],
        stored_guids={"c"},
    )
    assert [(p.guid, p.decision, p.attempt.status_code) for p in plan] == [
        ("c", "already stored", 500),
        ("a", "redeliver", 502),
    ]
    assert plan[1].event == "push"
