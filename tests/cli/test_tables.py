"""Listings fit the terminal: at 80 columns the keys stay whole and the error is cut first."""

from __future__ import annotations

import io
import re
from dataclasses import replace
from decimal import Decimal

from outbox.cli.tables import fitted_widths, key_column, note_column, text_column
from outbox.db import transaction, utcnow
from outbox.models import Source
from tests.cli.conftest import kill
from tests.factories import incoming, record

GITHUB_DELIVERY = "72d3162e-cc78-11e3-81ab-4c9367dc0958"
LONG_ERROR = "RetryLater: no account 583231 yet for checkout session cs_test_a1b2c3; " * 3


def events_on_screen(engine, sessions) -> tuple[int, int]:
    """A GitHub and a Stripe event with long types, ids and errors; their ids."""
    github, stripe = record(
        engine,
        replace(
            incoming(
                GITHUB_DELIVERY, source=Source.GITHUB, event_type="installation_repositories.added"
            ),
            account_id=9_876_543_210,
        ),
        replace(
            incoming("evt_1QXg1o8vcGmoR32sLkd7VaWq", event_type="customer.subscription.updated"),
            account_id=583231,
        ),
    )
    kill(sessions, stripe.id, LONG_ERROR)
    return github.id, stripe.id


def lines_of(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_events_list_at_80_columns_keeps_id_status_tries_and_account_whole(cli, engine, sessions):
    github, stripe = events_on_screen(engine, sessions)
    ran = cli("events", "list", columns="80")
    assert ran.code == 0, ran.stderr
    header, *rows = lines_of(ran.stdout)
    assert all(len(line) <= 80 for line in [header, *rows]), ran.stdout
    for name in ("id", "received", "source", "type", "status", "tries", "delivery", "account"):
        assert name in header
    stripe_row, github_row = rows  # newest first
    assert re.match(rf"\s*{github}\s", github_row) and "9876543210" in github_row
    assert "pending" in github_row
    assert re.match(rf"\s*{stripe}\s", stripe_row) and "583231" in stripe_row
    assert re.search(r"dead\s+1\s", stripe_row)  # tries
    assert "…" in stripe_row and LONG_ERROR[:60] not in stripe_row  # the error gave way


def test_events_list_at_200_columns_shows_everything_but_the_end_of_a_long_error(
    cli, engine, sessions
):
    events_on_screen(engine, sessions)
    ran = cli("events", "list", columns="200")
    _, stripe_row, github_row = lines_of(ran.stdout)
    assert GITHUB_DELIVERY in github_row and "installation_repositories.added" in github_row
    assert "evt_1QXg1o8vcGmoR32sLkd7VaWq" in stripe_row
    assert "customer.subscription.updated" in stripe_row
    assert LONG_ERROR[:40] in stripe_row and len(stripe_row) <= 200
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", stripe_row)  # the whole time fits


def test_the_footer_names_an_id_the_table_shows(cli, engine, sessions):
    events_on_screen(engine, sessions)
    ran = cli("events", "list", "--limit", "2", columns="80")
    last_id = re.search(r"--before-id (\d+)", ran.stdout).group(1)
    assert re.search(rf"^\s*{last_id}\s", ran.stdout, re.MULTILINE)


def test_credits_history_fits_80_columns_with_its_amounts_whole(cli, sessions):
    from domain import ledger
    from domain.account_opening import ensure_account

    with transaction(sessions) as session:
        ensure_account(session, 583231, login="octocat", now=utcnow(), welcome_credits=Decimal(50))
        ledger.adjust(
            session, 583231, Decimal("-12.5"), key="adjust:" + "k" * 40,
            reason="operator: " + "a long explanation of a goodwill reversal " * 3, now=utcnow(),
        )  # fmt: skip
    ran = cli("credits", "history", "octocat", columns="80")
    assert ran.code == 0, ran.stderr
    rows = lines_of(ran.stdout)
    assert all(len(line) <= 80 for line in rows), ran.stdout
    assert "-12.5" in rows[-1] and "50" in rows[1]


def test_columns_give_way_notes_first_then_text_from_the_right_and_keys_never():
    columns = [
        key_column("id"),
        text_column("type", least=4),
        text_column("delivery", least=4),
        key_column("status"),
        note_column("error", least=3),
    ]
    natural = [5, 20, 20, 10, 30]  # 85 wide with the four gaps
    assert fitted_widths(columns, natural, 200) == natural
    assert fitted_widths(columns, natural, 70) == [5, 20, 20, 10, 11]  # the error alone
    assert fitted_widths(columns, natural, 50) == [5, 20, 8, 10, 3]  # then the delivery
    assert fitted_widths(columns, natural, 20) == [5, 4, 4, 10, 3]  # keys stay whole


def test_rows_wider_than_a_narrow_terminal_keep_their_keys_whole_for_it_to_wrap(
    cli, engine, sessions
):
    github, stripe = events_on_screen(engine, sessions)
    ran = cli("events", "list", columns="40")
    assert ran.code == 0, ran.stderr
    header, stripe_row, github_row = lines_of(ran.stdout)[:3]
    assert header.split()[0] == "id" and "account" in header
    assert re.match(rf"\s*{github}\s", github_row) and "9876543210" in github_row
    assert re.match(rf"\s*{stripe}\s", stripe_row) and re.search(r"dead\s+1\s", stripe_row)
    assert len({len(line) for line in (header, stripe_row, github_row)}) == 1  # aligned


def test_a_listing_is_the_same_text_laid_out_by_rich_s_table_where_it_fits():
    from rich.cells import cell_len
    from rich.table import Table
    from rich.text import Text

    from outbox.cli.common import SafeConsole, shown, visible
    from outbox.cli.tables import print_listing

    columns = [key_column("id", right=True), text_column("type", least=4), note_column("error")]
    rows = [
        ("7", "invoice.paid", "[bold]not markup[/bold] and a long error that gives way"),
        ("1234", "日本語のイベント", Text.from_markup("[red]styled[/red]")),
        ("9", "\x1b[31mescaped", None),
    ]
    plain = [[c.plain if isinstance(c, Text) else visible(c or "") for c in row] for row in rows]
    natural = [
        max(cell_len(text) for text in [column.name, *(row[i] for row in plain)])
        for i, column in enumerate(columns)
    ]
    for width in (40, 80, 200):
        ours = SafeConsole(width=width, record=True, file=io.StringIO())
        print_listing(columns, rows, ours)
        widths = fitted_widths(columns, natural, width)
        rich = SafeConsole(width=width, record=True, file=io.StringIO())
        table = Table(box=None, header_style="bold", pad_edge=False, padding=(0, 1, 0, 0))
        for column, size in zip(columns, widths, strict=True):
            justify = "right" if column.right else "left"
            table.add_column(
                column.name, width=size, no_wrap=True, overflow="ellipsis", justify=justify
            )
        for row in rows:
            table.add_row(*(shown(c) if isinstance(c, str) else c for c in row))
        rich.print(table, highlight=False)
        assert ours.export_text() == rich.export_text(), width
