"""Commands that run the service's processes: migrate, serve, dev."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape

from outbox.cli.common import err_console, fail, friendly_errors, get_settings, say
from outbox.doorbell import Doorbell, LoopDoorbell
from outbox.logs import configure_logging

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from outbox.schema import SchemaState
    from outbox.settings import Settings

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
    """Apply the database migrations (Alembic upgrade head), then make the partitions ahead."""
    from outbox.db import make_engine
    from outbox.migrate import upgrade
    from outbox.partitions import keep_partitions

    settings = get_settings()
    upgrade(settings.database_url)
    typer.echo(f"migrated {safe_url(settings.database_url)} to head")
    engine = make_engine(settings.database_url, pool_size=1)
    try:
        created = keep_partitions(engine, settings.partition_interval, settings.partitions_ahead)
    finally:
        engine.dispose()
    if created:
        typer.echo(f"created partitions {', '.join(created)}")


@friendly_errors
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, help="Port to listen on (0: any free port)."),
) -> None:
    """Run the webhook ingress (uvicorn)."""
    settings = get_settings()
    require_migrated(settings)
    configure_logging(settings.log_level)
    from outbox import tracing
    from processors.loop_doorbell import RedisLoopDoorbell

    tracing.configure(settings, "serve")
    _serve(settings, host, port, doorbell=RedisLoopDoorbell(settings))


def require_migrated(settings: Settings) -> None:
    """Exit with one line when the database is unreachable or not at the migration head."""
    problem = schema_of(settings.database_url, settings.database_timeout_seconds).problem
    if problem is not None:
        fail(f"{problem} (DATABASE_URL={safe_url(settings.database_url)})")


def schema_of(database_url: str, timeout: float) -> SchemaState:
    """The database's schema against the code's migrations, on an engine used once."""
    from outbox.db import make_engine
    from outbox.schema import schema_state

    engine = make_engine(database_url, pool_size=1, timeout=timeout)
    try:
        return schema_state(engine)
    finally:
        engine.dispose()


@friendly_errors
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
    from outbox.settings import get_settings as settings_of_the_process

    settings_of_the_process.cache_clear()  # read again, with the dev defaults just set
    settings = get_settings()
    configure_logging(settings.log_level)
    from outbox import tracing

    tracing.configure(settings, "dev")
    from outbox.migrate import upgrade

    upgrade(settings.database_url)
    typer.echo(f"dev: database {safe_url(settings.database_url)} migrated")
    from outbox.dispatch import handler_entry_points, load_handler_table
    from processors.inprocess import InProcessProcessors

    load_handler_table(settings)  # a HANDLER_TABLE naming nothing: one line now, not later
    for entry in handler_entry_points():
        say(f"dev: handlers of an installed package: {entry.name} ({entry.value})")
    for warning in not_configured(settings):
        err_console.print(f"[yellow]dev: warning:[/yellow] {escape(warning)}", highlight=False)

    processors = InProcessProcessors(settings).start()
    _serve_backlog_gauges(processors.runtime.sessions)
    typer.echo("dev: in-process worker and sweeper started (no Redis needed)")
    typer.echo(f"dev: POST webhooks to http://{host}:{port}/webhooks/github and /webhooks/stripe")
    try:
        _serve(settings, host, port, doorbell=processors.doorbell, engine=processors.runtime.engine)
    finally:
        processors.stop()


def not_configured(settings: Settings) -> list[str]:
    """What this deployment cannot do for want of a setting or of data, for `outbox dev`."""
    from domain.packs import list_packs
    from outbox.cli.database import open_database

    missing = []
    if not settings.github_app_id or (
        settings.github_app_private_key is None and settings.github_app_private_key_file is None
    ):
        missing.append(
            "no GitHub App (GITHUB_APP_ID, GITHUB_APP_PRIVATE_KEY or _FILE): PR jobs fail "
            "at once and `outbox reconcile github` cannot run"
        )
    if settings.stripe_api_key is None:
        missing.append(
            "no STRIPE_API_KEY: events that need a Stripe object wait and retry, usage is "
            "not reported to the meter, and `outbox reconcile stripe` cannot run"
        )
    with open_database(settings) as (_, sessions), sessions() as session:
        if not list_packs(session):
            missing.append(
                "no credit pack on sale: a paid checkout grants no credits "
                "(`outbox packs set` or `outbox packs load FILE`)"
            )
    return missing


def _serve_backlog_gauges(sessions: Any) -> None:
    """`outbox dev`'s /metrics also has the sweeper's backlog gauges (processors/backlog.py)."""
    from prometheus_client import REGISTRY

    from processors.backlog import BacklogCollector

    REGISTRY.register(BacklogCollector(sessions))


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
    from ingress.serving import AnnouncedServer

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
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        # uvicorn's own loggers go through ours: its rare errors are JSON lines too.
        log_config=None,
        http=edge_protocol(edge_limits(settings)),
        # Nothing in the ingress reads a request's client address or scheme: uvicorn's
        # X-Forwarded-* middleware would only scan every webhook's headers for them.
        proxy_headers=False,
    )
    AnnouncedServer(config, announce=say).run()


def _redis_doorbell(settings: Settings) -> Doorbell:
    """Rings `process_events` on Redis; a ring that fails is dropped (the sweeper finds the row)."""
    from processors.broker import setup_broker
    from processors.event_actor import EventsDoorbell

    setup_broker(settings, in_process=False)
    return EventsDoorbell()


def safe_url(url: str) -> str:
    """The URL without its password, for printing."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
