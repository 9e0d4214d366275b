"""`outbox console`: the operator console (outbox/console), a process of its own.

It never starts without CONSOLE_TOKEN: on localhost an operator would still expect a
sign-in (anyone with a shell on the machine, or a page in the browser, could otherwise
replay events), and on any other address the token is all that stands between the
network and the data. Either way the answer is one line and exit 2.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any

import typer

from outbox.cli.common import friendly_errors, get_settings, say, usage_error

if TYPE_CHECKING:
    from outbox.settings import Settings

#: The console's default port: not the ingress's (8000).
DEFAULT_PORT = 8100
TOKEN_HINT = "set it, e.g. to $(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"


def register(app: typer.Typer) -> None:
    app.command()(console)


def is_loopback(host: str) -> bool:
    """Whether `host` is this machine only: localhost, 127.0.0.0/8 or ::1."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve anywhere


def refusal(host: str, token: str | None) -> str | None:
    """Why the console must not start on `host` with this token, or None."""
    from outbox.console.auth import MIN_TOKEN_LENGTH

    if not token:
        if not is_loopback(host):
            return (
                f"refusing to serve the console on {host!r} (not loopback) without "
                f"CONSOLE_TOKEN: {TOKEN_HINT}"
            )
        return f"the console needs a token to sign in with, CONSOLE_TOKEN: {TOKEN_HINT}"
    if len(token) < MIN_TOKEN_LENGTH:
        return f"CONSOLE_TOKEN is shorter than {MIN_TOKEN_LENGTH} characters: {TOKEN_HINT}"
    return None


@friendly_errors
def console(
    host: str = typer.Option("127.0.0.1", help="Address to listen on (loopback by default)."),
    port: int = typer.Option(DEFAULT_PORT, help="Port to listen on (0: any free port)."),
) -> None:
    """Run the operator console in the browser (needs CONSOLE_TOKEN)."""
    settings = get_settings()
    token = settings.console_token.get_secret_value() if settings.console_token else None
    problem = refusal(host, token)
    if problem is not None:
        usage_error(problem)
    from outbox.cli.run import require_migrated
    from outbox.logs import configure_logging

    require_migrated(settings)
    configure_logging(settings.log_level)
    _serve(settings, host, port)


def _serve(settings: Settings, host: str, port: int) -> None:
    import uvicorn

    from ingress.serving import listening_on
    from outbox.console.app import create_app

    class ConsoleServer(uvicorn.Server):
        async def startup(self, sockets: list[Any] | None = None) -> None:
            await super().startup(sockets)
            if self.started:
                say(f"outbox: operator console on {listening_on(self.servers)} (CONSOLE_TOKEN)")

    app = create_app(settings)
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, log_config=None
    )
    ConsoleServer(config).run()
