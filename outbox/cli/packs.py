"""`outbox packs`: the credit pack catalog (which Stripe price buys how many credits)."""

from __future__ import annotations

from pathlib import Path

import typer

from outbox.cli.billing_common import billing_session
from outbox.cli.common import fail, friendly_errors, print_json_lines, say
from outbox.cli.tables import key_column, print_listing, text_column

packs_app = typer.Typer(
    help="The credit pack catalog: Stripe price id -> credits.",
    no_args_is_help=True,
    add_completion=False,
)


def register(app: typer.Typer) -> None:
    app.add_typer(packs_app, name="packs")


@packs_app.command("list")
@friendly_errors
def list_(
    include_retired: bool = typer.Option(False, "--all", help="Also the retired packs."),
    json_output: bool = typer.Option(False, "--json", help="One JSON object per line."),
) -> None:
    """The packs on sale (with --all, also the retired ones, still honoured when paid)."""
    from domain.packs import list_packs

    with billing_session() as session:
        packs = list_packs(session, include_retired=include_retired)
        rows = [pack.as_dict() for pack in packs]
        amounts = [_amount(pack.unit_amount) for pack in packs]
    if not rows:
        fail("no credit packs; add one with `outbox packs set` or `outbox packs load FILE`")
    if json_output:
        # The fields `packs load` reads: the price as an amount ("4.99") beside its currency.
        priced = zip(rows, amounts, strict=True)
        print_json_lines({**row, "price": amount} for row, amount in priced)
        return
    columns = (
        key_column("price id"),
        text_column("name", least=8),
        key_column("credits", right=True),
        text_column("price", least=6),
        key_column("on sale"),
    )
    print_listing(
        columns,
        [
            [
                r["price_id"],
                r["name"],
                r["credits"],
                r["price"],
                "yes" if r["active"] else "retired",
            ]
            for r in rows
        ],
    )


@packs_app.command("set")
@friendly_errors
def set_(
    price_id: str = typer.Argument(..., help="The Stripe price id that sells the pack."),
    name: str = typer.Option(..., help="The pack's name, shown to people."),
    credits: str = typer.Option(..., help="Credits the pack grants (up to 4 decimals)."),
    price: str | None = typer.Option(None, help="Display price, e.g. 4.99 (never charged)."),
    currency: str | None = typer.Option(None, help="Display currency, e.g. eur."),
    retired: bool = typer.Option(False, "--retired", help="Define it off sale."),
) -> None:
    """Create or replace the pack a Stripe price buys."""
    from domain.packs import PackSpec, set_pack
    from outbox.db import utcnow

    raw = {"price_id": price_id, "name": name, "credits": credits, "active": not retired}
    raw.update({k: v for k, v in (("price", price), ("currency", currency)) if v is not None})
    with billing_session() as session:
        spec = PackSpec.parse(raw, "pack")
        created = set_pack(session, spec, now=utcnow())
    say(f"{'added' if created else 'updated'} pack {spec.price_id}: {spec.name}")


@packs_app.command("remove")
@friendly_errors
def remove(
    price_id: str = typer.Argument(..., help="The Stripe price id of the pack."),
) -> None:
    """Take a pack off sale. It stays known, so a payment made for it is still granted."""
    from domain.packs import retire_pack
    from outbox.db import utcnow

    with billing_session() as session:
        if not retire_pack(session, price_id, now=utcnow()):
            fail(f"no pack on sale with price id {price_id!r}")
    say(f"retired pack {price_id}")


@packs_app.command("load")
@friendly_errors
def load(
    file: Path = typer.Argument(
        ..., exists=True, dir_okay=False, readable=True, help="A TOML or JSON pack file."
    ),
) -> None:
    """Create or replace every pack a file defines (format: `[[pack]]` tables, see README)."""
    from domain.packs import load_packs, read_pack_file
    from outbox.db import utcnow

    with billing_session() as session:
        specs = read_pack_file(file)
        created, updated = load_packs(session, specs, now=utcnow())
    say(f"loaded {len(specs)} packs from {file}: {created} added, {updated} updated")


def _amount(unit_amount: int | None) -> str | None:
    """Minor units as the decimal amount a pack file gives ("4.99"), None when unpriced."""
    from decimal import Decimal

    return None if unit_amount is None else f"{Decimal(unit_amount).scaleb(-2):.2f}"
