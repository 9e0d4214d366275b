"""Every state-changing request is a POST with the session's CSRF token; GET changes nothing."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.testclient import TestClient

from tests.cli.conftest import finish, row, stored
from tests.console.conftest import HTML, TOKEN, form_token


def test_a_replay_without_the_token_is_refused_and_changes_nothing(
    client: TestClient, engine: Engine, sessions: sessionmaker[Session]
) -> None:
    event_id = stored(engine)
    finish(sessions, event_id)
    for data in ({"ids": str(event_id)}, {"ids": str(event_id), "csrf": "x" * 43},
                 {"ids": str(event_id), "csrf": ""}):  # fmt: skip
        answer = client.post("/replay", data=data, headers=HTML)
        assert answer.status_code == 403
    assert row(sessions, event_id).status == "done"


def test_another_sessions_token_is_refused(
    client: TestClient, anonymous: TestClient, engine: Engine, sessions: sessionmaker[Session]
) -> None:
    event_id = stored(engine)
    finish(sessions, event_id)
    theirs = form_token(client.get("/").text)
    client.cookies.clear()
    from tests.console.conftest import sign_in

    sign_in(client)
    answer = client.post("/replay", data={"ids": str(event_id), "csrf": theirs})
    assert answer.status_code == 403
    assert answer.json() == {"error": "missing or wrong CSRF token: reload the page"}
    assert row(sessions, event_id).status == "done"


def test_sign_in_needs_its_form_token(anonymous: TestClient) -> None:
    anonymous.get("/login")
    answer = anonymous.post("/login", data={"token": TOKEN, "csrf": "guess"})
    assert answer.status_code == 403
    fresh = TestClient(anonymous.app, base_url="https://console")
    page = anonymous.get("/login")
    answer = fresh.post("/login", data={"token": TOKEN, "csrf": form_token(page.text)})
    assert answer.status_code == 403  # the form's token without its cookie


def test_state_changes_are_not_reachable_by_get(client: TestClient) -> None:
    assert client.get("/logout").status_code == 405
    assert client.get("/replay/runs/1", headers=HTML).status_code == 404
    assert client.put("/replay", data={}).status_code == 405


def test_a_post_that_is_not_a_form_is_refused(client: TestClient) -> None:
    answer = client.post(
        "/replay", content=b'{"ids": "1"}', headers={"content-type": "application/json"}
    )
    assert answer.status_code == 400
    answer = client.post("/replay", content=b"ids=" + b"1," * 40_000,
                         headers={"content-type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert answer.status_code == 400
