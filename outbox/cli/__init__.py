"""The `outbox` command: a thin layer over the outbox operations.

Each command group lives in its own module and is added here. Commands that need the
ingress, the processors or the domain import them inside the command, so that
`outbox --help` stays fast and the layers stay apart (docs/architecture.md, Layout).
"""

from __future__ import annotations

import typer

from outbox.cli import (
    accounts,
    credits,
    doctor,
    events,
    jobs,
    packs,
    purge,
    reconcile,
    run,
    send,
    tail,
    usage,
    work,
)

app = typer.Typer(
    name="outbox",
    help="Durable GitHub and Stripe webhooks: receive, process exactly once, inspect, replay.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
run.register(app)
send.register(app)
work.register(app)
jobs.register(app)
usage.register(app)
events.register(app)
tail.register(app)
purge.register(app)
reconcile.register(app)
credits.register(app)
packs.register(app)
accounts.register(app)
doctor.register(app)


def main() -> None:
    app()
