"""Commands that run the service's processes: migrate, serve, dev."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import typer

from outbox.cli.common import friendly_errors
from outbox.doorbell import Doorbell, LoopDoorbell
from outbox.logs import configure_logging
from outbox.settings import Settings, get_settings

if TYPE_CHECKING:
    from sqlalchemy import Engine

#: Secrets `outbox dev` and `outbox send` fall back to when none are configured, so a
#: newcomer can post a signed example without setting anything. Never used by `serve`.
DEV_GITHUB_SECRET = "dev-github-secret"
DEV_STRIPE_SECRET = "whsec_dev_secret"

GC_YOUNG_OBJECTS = 20_000  #: objects allocated (net) between young collections in a server


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
    typer.echo(f"migrated {safe_url(settings.database_url)} to head")


def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, help="Port to listen on."),
) -> None:
    """Run the webhook ingress (uvicorn)."""
    settings = get_settings()
    configure_logging(settings.log_level, buffered=True)
    from processors.loop_doorbell import RedisLoopDoorbell

    _serve(settings, host, port, doorbell=RedisLoopDoorbell(settings))


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
    typer.echo(f"dev: database {safe_url(settings.database_url)} migrated")
    from processors.inprocess import InProcessProcessors

    processors = InProcessProcessors(settings).start()
    typer.echo("dev: in-process worker and sweeper started (no Redis needed)")
    typer.echo(f"dev: POST webhooks to http://{host}:{port}/webhooks/github and /webhooks/stripe")
    try:
        _serve(settings, host, port, doorbell=processors.doorbell, engine=processors.runtime.engine)
    finally:
        processors.stop()


def _serve(
    settings: Settings,
    host: str,
    port: int,
    doorbell: Doorbell | LoopDoorbell | None,
    engine: Engine | None = None,
) -> None:
    import gc
    import sys

    import uvicorn

    from ingress.app import create_app
    from ingress.edge import edge_limits, edge_protocol

    sys.setswitchinterval(0.0005)

    app = create_app(settings, engine=engine, doorbell=doorbell)
    # Everything imported so far (SQLAlchemy, dramatiq, the SDKs: ~130,000 objects) lives
    # as long as the process. Frozen, the collector stops walking it: a full collection
    # took 275 ms of a busy loop, the ingress's p99 under load.
    gc.collect()
    gc.freeze()
    # Webhooks waiting for their commit keep young objects alive (requests, futures,
    # rows). At the default threshold (700) the collector ran every few requests, moved
    # those survivors up and walked the older generations again; collecting less often
    # cut ~15 % of the CPU per webhook under 64 senders (three paired runs).
    gc.set_threshold(GC_YOUNG_OBJECTS, 20, 20)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        # uvicorn's own loggers go through ours: its rare errors are JSON lines too.
        log_config=None,
        http=edge_protocol(edge_limits(settings)),
    )


def _redis_doorbell(settings: Settings) -> Doorbell:
    """Rings `process_events` on Redis; a ring that fails is dropped (the sweeper finds the row)."""
    from processors.broker import setup_broker
    from processors.events import EventsDoorbell

    setup_broker(settings, in_process=False)
    return EventsDoorbell()


def safe_url(url: str) -> str:
    """The URL without its password, for printing."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
