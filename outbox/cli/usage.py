"""`outbox usage list`: usage records of successful jobs and where their Stripe report stands;
`outbox usage resolve`: an operator's decision on a record that stopped for one."""

from __future__ import annotations

import typer

from outbox.cli.common import fail, friendly_errors, print_json_lines, usage_error
from outbox.cli.jobs import account_id_of, command_session
from outbox.cli.tables import key_column, note_column, print_listing, text_column

usage_app = typer.Typer(help="Usage records reported to the Stripe meter.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(usage_app, name="usage")


@usage_app.command("list")
@friendly_errors
def list_usage(
    unreported: bool = typer.Option(False, "--unreported", help="Only those Stripe lacks."),
    account: str | None = typer.Option(None, help="Only this account's (id or login)."),
    limit: int = typer.Option(100, min=1, max=10_000, help="At most this many, newest first."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
) -> None:
    """List usage records, newest first (exit 1 when none match)."""
    from domain import usage

    with command_session() as session:
        account_id = account_id_of(session, account)
        rows = usage.list_usage(session, unreported=unreported, account_id=account_id, limit=limit)
    if not rows:
        fail("no unreported usage records" if unreported else "no usage records")
    if as_json:
        print_json_lines(rows)
    else:
        columns = (
            key_column("id", right=True),
            text_column("key", least=12),
            key_column("account", right=True),
            key_column("quantity", right=True),
            key_column("state"),
            text_column("created", least=10),
            text_column("reported", least=10),
            note_column("note"),
        )
        print_listing(
            columns,
            [
                (
                    str(row["id"]),
                    str(row["key"]),
                    str(row["account_id"]),
                    str(row["quantity"]),
                    str(row["state"]),
                    f"{row['created_at']:%Y-%m-%d %H:%M:%S}",
                    f"{row['reported_at']:%Y-%m-%d %H:%M:%S}" if row["reported_at"] else "",
                    str(row["last_error"] or "").split("\n")[0],
                )
                for row in rows
            ],
        )


@usage_app.command("resolve")
@friendly_errors
def resolve(
    record_id: int = typer.Argument(..., help="The usage record's id."),
    reported: bool = typer.Option(
        False, "--reported", help="Stripe has the event (checked by hand): never send it again."
    ),
    resend: bool = typer.Option(
        False, "--resend", help="Stripe does not have it: send it again, under a new identifier."
    ),
) -> None:
    """Resolve a record in state `needs operator`: exactly one of --reported, --resend."""
    from domain import usage
    from outbox.db import utcnow

    if reported == resend:
        usage_error("give exactly one of --reported, --resend")
    with command_session() as session:
        try:
            if reported:
                record = usage.resolve_reported(session, record_id, now=utcnow())
                message = f"usage record {record.id} is reported"
            else:
                record = usage.resolve_resend(session, record_id, now=utcnow())
                message = (
                    f"usage record {record.id} is due now, as identifier {record.identifier} "
                    "(the sweeper rings it)"
                )
        except LookupError:
            fail(f"no usage record {record_id}")
        except usage.NoOperatorNeeded as refused:
            fail(str(refused))
    typer.echo(message)
