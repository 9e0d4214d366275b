"""Commands that run the service's processes: migrate, serve, dev."""

from __future__ import annotations

import os

import typer

from outbox.cli.common import friendly_errors
from outbox.logs import configure_logging
from outbox.settings import Settings, get_settings

#: Secrets `outbox dev` and `outbox send` fall back to when none are configured, so a
#: newcomer can post a signed example without setting anything. Never used by `serve`.
DEV_GITHUB_SECRET = "dev-github-secret"
DEV_STRIPE_SECRET = "whsec_dev_secret"


def register(app: typer.Typer) -> None:
    app.command()(migrate)
    app.command()(serve)
    app.command()(dev)


@friendly_errors
def migrate() -> None:
    """Apply the database migrations (Alembic upgrade head)."""
    from outbox.migrate import upgrade

    settings = get_settings()
    upgrade(settings.database_url)
    typer.echo(f"migrated {_safe_url(settings.database_url)} to head")


def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, help="Port to listen on."),
) -> None:
    """Run the webhook ingress (uvicorn)."""
    settings = get_settings()
    configure_logging(settings.log_level)
    _serve(settings, host, port, doorbell=_redis_doorbell(settings))


def dev(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, help="Port to listen on."),
) -> None:
    """Everything in one process on the embedded default: migrations, ingress, worker, sweeper."""
    for name, value in (
        ("GITHUB_WEBHOOK_SECRET", DEV_GITHUB_SECRET),
        ("STRIPE_WEBHOOK_SECRET", DEV_STRIPE_SECRET),
        ("STRIPE_MODE", "any"),
    ):
        if not os.environ.get(name):
            os.environ[name] = value
            typer.echo(
                f"dev: {name} not set, using {'the dev secret' if 'SECRET' in name else value}"
            )
    get_settings.cache_clear()
    settings = get_settings()
    configure_logging(settings.log_level)
    from outbox.migrate import upgrade

    upgrade(settings.database_url)
    typer.echo(f"dev: database {_safe_url(settings.database_url)} migrated")
    typer.echo(f"dev: POST webhooks to http://{host}:{port}/webhooks/github and /webhooks/stripe")
    _serve(settings, host, port, doorbell=None)


def _serve(settings: Settings, host: str, port: int, doorbell: object | None) -> None:
    import sys

    import uvicorn

    from ingress.app import create_app

    sys.setswitchinterval(0.0005)

    app = create_app(settings, doorbell=doorbell)  # type: ignore[arg-type]
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


def _redis_doorbell(settings: Settings) -> object | None:
    return None


def _safe_url(url: str) -> str:
    """The URL without its password, for printing."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
