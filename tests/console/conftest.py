"""The console in-process (Starlette's TestClient over https://, as a browser on a secure
origin would reach it), signed in or not, on the real databases of tests/conftest.py."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine
from starlette.testclient import TestClient

from outbox.console.app import create_app
from outbox.settings import Settings
from tests.cli.conftest import cli, cli_env  # noqa: F401  (the `outbox` command, in-process)

TOKEN = "console-test-token-0123456789"
#: What a browser sends for a page: errors come back as pages, not JSON.
HTML = {"accept": "text/html"}


@pytest.fixture
def console_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"console_token": SecretStr(TOKEN), "redis_url": "redis://127.0.0.1:1/0"}
    )


@pytest.fixture
def anonymous(console_settings: Settings, engine: Engine) -> Iterator[TestClient]:
    """A client that has not signed in."""
    with TestClient(create_app(console_settings, engine=engine), base_url="https://console") as c:
        yield c


@pytest.fixture
def client(anonymous: TestClient) -> TestClient:
    """A client signed in with the token."""
    sign_in(anonymous)
    return anonymous


def form_token(html: str) -> str:
    """The CSRF token of the first form of a page."""
    found = re.search(r'name="csrf" value="([^"]*)"', html)
    assert found, "no csrf field on the page"
    return found.group(1)


def sign_in(client: TestClient, token: str = TOKEN) -> None:
    page = client.get("/login")
    answer = client.post(
        "/login", data={"csrf": form_token(page.text), "token": token, "next": "/"},
        follow_redirects=False,
    )  # fmt: skip
    assert answer.status_code == 303, answer.text
