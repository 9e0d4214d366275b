"""Signing in: the token is the only way in, and the session cookie it buys is signed,
Secure, HttpOnly and SameSite=Strict."""

from __future__ import annotations

import time

from starlette.testclient import TestClient

from outbox.console.auth import SESSION_COOKIE, SESSION_SECONDS, ConsoleKeys
from tests.console.conftest import HTML, TOKEN, form_token

PAGES = ["/", "/events", "/events/1", "/accounts/1", "/attention", "/replay?id=1"]


def test_every_page_sends_a_stranger_to_the_sign_in_form(anonymous: TestClient) -> None:
    for path in PAGES:
        answer = anonymous.get(path, follow_redirects=False)
        assert answer.status_code == 303, path
        assert answer.headers["location"].startswith("/login?next=")


def test_the_token_signs_in_with_a_secure_http_only_strict_cookie(anonymous: TestClient) -> None:
    page = anonymous.get("/login")
    answer = anonymous.post(
        "/login", data={"csrf": form_token(page.text), "token": TOKEN, "next": "/events"},
        follow_redirects=False,
    )  # fmt: skip
    assert answer.status_code == 303
    assert answer.headers["location"] == "/events"
    [cookie] = [
        c for c in answer.headers.get_list("set-cookie") if c.startswith(SESSION_COOKIE + "=")
    ]
    flags = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"secure", "httponly", "samesite=strict", "path=/"} <= flags
    assert f"max-age={SESSION_SECONDS}" in flags
    assert TOKEN not in cookie
    assert anonymous.get("/", follow_redirects=False).status_code == 200


def test_a_wrong_token_is_refused(anonymous: TestClient) -> None:
    page = anonymous.get("/login")
    for wrong in ("", TOKEN[:-1], TOKEN + "x", TOKEN.upper()):
        answer = anonymous.post(
            "/login", data={"csrf": form_token(page.text), "token": wrong}, headers=HTML,
            follow_redirects=False,
        )  # fmt: skip
        assert answer.status_code == 401
        assert "not the console&#39;s token" in answer.text
        set_cookies = answer.headers.get_list("set-cookie")
        assert not [c for c in set_cookies if c.startswith(SESSION_COOKIE + "=")]
        page = answer


def test_a_forged_tampered_or_expired_cookie_is_no_session() -> None:
    keys = ConsoleKeys(TOKEN)
    cookie = keys.new_session()
    assert keys.session_of(cookie) is not None
    issued, nonce, signature = cookie.split(".")
    assert keys.session_of(f"{int(issued) + 1}.{nonce}.{signature}") is None
    assert keys.session_of(f"{issued}.{nonce}x.{signature}") is None
    assert keys.session_of(f"{issued}.{nonce}.{signature[:-1]}") is None
    assert ConsoleKeys(TOKEN + "-rotated").session_of(cookie) is None
    assert keys.session_of(cookie, now=time.time() + SESSION_SECONDS + 1) is None
    for junk in ("", "a.b", "a.b.c", "..", "1.2.3.4", "١٢.x.y"):
        assert keys.session_of(junk) is None


def test_the_token_is_compared_as_digests_of_any_length() -> None:
    keys = ConsoleKeys(TOKEN)
    assert keys.token_matches(TOKEN)
    assert not keys.token_matches(TOKEN + "\x00")
    assert not keys.token_matches("\udcff")


def test_signing_out_drops_the_cookie(client: TestClient) -> None:
    page = client.get("/")
    answer = client.post("/logout", data={"csrf": form_token(page.text)}, follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/login"
    assert client.get("/", follow_redirects=False).status_code == 303


def test_sign_in_sends_back_only_to_a_path_of_the_console(anonymous: TestClient) -> None:
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example", "evil"):
        anonymous.cookies.clear()
        page = anonymous.get("/login")
        answer = anonymous.post(
            "/login", data={"csrf": form_token(page.text), "token": TOKEN, "next": target},
            follow_redirects=False,
        )  # fmt: skip
        assert answer.headers["location"] == "/", target


def test_a_signed_in_client_is_not_asked_again(client: TestClient) -> None:
    answer = client.get("/login?next=/attention", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/attention"
