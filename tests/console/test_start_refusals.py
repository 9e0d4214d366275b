"""`outbox console` never starts without its token: one line, exit 2."""

from __future__ import annotations

from tests.cli.conftest import Cli


def test_a_non_local_address_without_a_token_is_refused(cli: Cli) -> None:
    for host in ("0.0.0.0", "::", "192.0.2.10", "console.example"):
        ran = cli("console", "--host", host, console_token=None)
        assert ran.code == 2, host
        assert "not loopback" in ran.stderr and "CONSOLE_TOKEN" in ran.stderr
        assert len(ran.stderr.strip().splitlines()) == 1


def test_localhost_without_a_token_is_refused_with_a_hint(cli: Cli) -> None:
    for host in ("127.0.0.1", "localhost", "::1"):
        ran = cli("console", "--host", host, console_token=None)
        assert ran.code == 2
        assert "needs a token" in ran.stderr and "secrets.token_urlsafe" in ran.stderr


def test_a_short_token_is_refused(cli: Cli) -> None:
    ran = cli("console", console_token="short")
    assert ran.code == 2
    assert "shorter than 16" in ran.stderr
