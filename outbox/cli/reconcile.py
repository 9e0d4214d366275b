"""`outbox reconcile stripe | github --since 3d`: fetch what the providers sent and we never stored.

The rules are in outbox/reconcile.py; this module parses the command line, builds the API
clients, and prints what was done.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import typer

from outbox.cli.common import (
    EXIT_FAILED,
    JSON_OPTION,
    SafeConsole,
    err_console,
    fail,
    friendly_errors,
    get_settings,
    print_json_lines,
    shown,
    usage_error,
)
from outbox.cli.tables import (
    key_column,
    listing_console,
    note_column,
    print_listing,
    text_column,
)
from outbox.cli.timespec import DURATION_HELP, parse_moment
from outbox.states import Status

if TYPE_CHECKING:
    from githubkit import AppAuthStrategy, GitHub
    from rich.text import Text

    from outbox.reconcile import Backfill, Delivery, Redelivery
    from outbox.settings import Settings

reconcile_app = typer.Typer(
    name="reconcile",
    help="Find webhooks Stripe or GitHub sent that were never stored, and get them in.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(reconcile_app)


SINCE_OPTION = typer.Option("3d", "--since", help=f"How far back to look: {DURATION_HELP}.")
DRY_RUN_OPTION = typer.Option(False, "--dry-run", help="Say what would be done, change nothing.")


def _since(text: str, *, window: timedelta, provider: str, now: datetime) -> datetime:
    since = parse_moment(text, "--since", now=now)
    if since > now:
        usage_error(f"--since {text} is in the future")
    if now - since > window:
        usage_error(f"--since {text} is further back than {provider} keeps ({window.days} days)")
    return since


def _stdout(as_json: bool) -> SafeConsole:
    # With --json, stdout carries JSON only; the words for people go to stderr.
    return err_console if as_json else listing_console()


@reconcile_app.command("stripe")
@friendly_errors
def reconcile_stripe(
    since: str = SINCE_OPTION, dry_run: bool = DRY_RUN_OPTION, as_json: bool = JSON_OPTION
) -> None:
    """Store each Stripe event we handle that never arrived, marked backfilled (30 days max)."""
    import stripe

    from domain.clients import NotConfigured, stripe_client
    from outbox import reconcile
    from outbox.cli.database import open_database
    from outbox.db import transaction, utcnow
    from outbox.dispatch import HandlerTableNotFound, load_handler_table

    now = utcnow()
    start = _since(since, window=reconcile.STRIPE_EVENT_RETENTION, provider="Stripe", now=now)
    settings = get_settings()
    try:
        client = stripe_client(settings)
        types = reconcile.handled_stripe_types(load_handler_table(settings))
    except (NotConfigured, HandlerTableNotFound) as exc:
        usage_error(str(exc))
    results: list[Backfill] = []
    with open_database(settings) as (_, sessions):
        try:
            for page in reconcile.fetch_stripe_pages(client, since=start, types=types):
                with transaction(sessions) as session:
                    results += reconcile.backfill_stripe(
                        session, page, mode=settings.stripe_mode, now=now, dry_run=dry_run
                    )
        except stripe.StripeError as exc:
            reason = exc.user_message or type(exc).__name__
            stored = _ring_stored(settings, results, err_console)
            fail(
                f"Stripe API: {reason}; {stored} event(s) were stored before it "
                "(reconcile is idempotent: run it again)"
            )
    new = [r for r in results if r.outcome in ("stored", "missing")]
    refused = [r for r in results if r.outcome.startswith("refused")]
    if as_json:
        print_json_lines(r.as_json() for r in results)
    out = _stdout(as_json)
    if new and not as_json:
        columns = (
            key_column("event"),
            text_column("type", least=12),
            text_column("created", least=10),
            text_column("outcome", least=10),
            key_column("row", right=True),
            key_column("status"),
        )
        rows = [
            (
                r.event_id,
                r.event_type,
                f"{r.created:%Y-%m-%d %H:%M:%S}" if r.created else "",
                "would store" if dry_run else "stored (backfilled)",
                str(r.row_id or ""),
                r.status or "",
            )
            for r in new
        ]
        print_listing(columns, rows, out)
    out.print(
        f"Stripe listed {len(results)} event(s) of {len(types)} handled type(s) since "
        f"{start:%Y-%m-%d %H:%M} UTC: {len(results) - len(new) - len(refused)} already stored, "
        f"{len(new)} {'missing (dry run: nothing stored)' if dry_run else 'stored as backfilled'}",
        highlight=False,
    )
    for r in refused:
        err_console.print(
            f"[red]refused[/red] {shown(r.event_id)}: {shown(r.outcome)}", highlight=False
        )
    if not dry_run:
        _ring_stored(settings, results, out)


def _ring_stored(settings: Settings, results: list[Backfill], out: SafeConsole) -> int:
    """Ring the processors for the rows just stored (and say so); how many were stored."""
    from outbox.cli.ringing import ProcessorsBell

    stored = [r for r in results if r.outcome == "stored"]
    due = [r.row_id for r in stored if r.row_id is not None and r.status == Status.PENDING]
    if due:
        out.print(ProcessorsBell(settings).ring(due).note, highlight=False)
    return len(stored)


@reconcile_app.command("github")
@friendly_errors
def reconcile_github(
    since: str = SINCE_OPTION, dry_run: bool = DRY_RUN_OPTION, as_json: bool = JSON_OPTION
) -> None:
    """Ask GitHub to redeliver each failed App webhook delivery we never stored (3 days max)."""
    from githubkit.exception import GitHubException

    from domain.clients import NotConfigured, github_app
    from outbox import reconcile
    from outbox.cli.database import open_database
    from outbox.db import utcnow

    now = utcnow()
    start = _since(since, window=reconcile.GITHUB_REDELIVERY_WINDOW, provider="GitHub", now=now)
    settings = get_settings()
    try:
        github = github_app(settings)
    except NotConfigured as exc:
        usage_error(str(exc))
    try:
        deliveries = list(reconcile.fetch_github_deliveries(github, since=start))
    except GitHubException as exc:
        fail(f"GitHub API, listing the App's deliveries: {_github_reason(exc)}")
    with open_database(settings) as (_, sessions), sessions() as session:
        plan = reconcile.plan_redeliveries(deliveries, reconcile.stored_guids(session, deliveries))
    done = plan if dry_run else [_redeliver(github, item) for item in plan]
    _report_github(start, deliveries, done, dry_run, as_json)
    refused = [r for r in done if r.error]
    if refused:
        err_console.print(
            f"[red]error:[/red] GitHub refused {len(refused)} redelivery request(s): "
            + ", ".join(shown(r.guid) for r in refused),
            highlight=False,
        )
        raise typer.Exit(EXIT_FAILED)


def _redeliver(github: GitHub[AppAuthStrategy], item: Redelivery) -> Redelivery:
    """Act on one planned item: ask GitHub for a redelivery, or keep the item as it is."""
    from githubkit.exception import GitHubException

    from outbox import reconcile

    if item.decision != "redeliver":
        return item
    try:
        reconcile.redeliver(github, item.attempt)
    except GitHubException as exc:
        return replace(item, error=_github_reason(exc))
    return item


def _github_reason(exc: Exception) -> str:
    """GitHub's answer in a line: status, reason, and its message when it gave one."""
    from githubkit.exception import RequestError, RequestFailed

    if isinstance(exc, RequestFailed):
        answer = exc.response.raw_response
        try:
            message = answer.json().get("message")
        except ValueError:
            message = None
        return f"{answer.status_code} {answer.reason_phrase}" + (f": {message}" if message else "")
    if isinstance(exc, RequestError):
        return f"{type(exc.exc).__name__}: {exc.exc}"
    return f"{type(exc).__name__}: {exc}"


def _report_github(
    start: datetime,
    deliveries: list[Delivery],
    done: list[Redelivery],
    dry_run: bool,
    as_json: bool,
) -> None:
    if as_json:
        print_json_lines(r.as_json() for r in done)
    out = _stdout(as_json)
    if done and not as_json:
        rows = []
        for r in done:
            decision: str | Text = r.decision
            if r.decision == "redeliver":
                decision = "would redeliver" if dry_run else "redelivery asked"
            if r.error:
                from rich.text import Text

                decision = Text(f"refused: {r.error}", style="red")
            rows.append(
                (
                    r.guid,
                    r.event,
                    f"{r.attempt.delivered_at:%Y-%m-%d %H:%M:%S}",
                    f"{r.attempt.status_code} {r.attempt.status}",
                    decision,
                )
            )
        columns = (
            key_column("guid"),
            text_column("event", least=10),
            text_column("failed at", least=10),
            text_column("answer", least=8),
            note_column("decision", least=10),
        )
        print_listing(columns, rows, out)
    decisions = Counter(r.decision for r in done if not r.error)
    asked = decisions["redeliver"]
    out.print(
        f"GitHub listed {len(deliveries)} delivery attempt(s) since {start:%Y-%m-%d %H:%M} UTC; "
        f"{len(done)} webhook(s) failed at least once: "
        f"{decisions['delivered since']} delivered since, {decisions['already stored']} "
        f"already stored, {asked} {'to redeliver (dry run)' if dry_run else 'redelivery asked'}",
        highlight=False,
    )
    if asked and not dry_run:
        out.print(
            "redelivered webhooks arrive through the ingress like the first time", highlight=False
        )
