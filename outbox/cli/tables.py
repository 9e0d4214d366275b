"""The one table style of every listing command, fitted to the terminal's width.

A listing is a row per item, one line each, columns one space apart with a bold header
and no box. When the rows are wider than the terminal, columns give way in a fixed
order instead of Rich's even squeeze (which hid whole columns): first the `note`
columns (an error, a reason) are cut with an ellipsis down to a few characters, then
the other `text` columns, from the last to the first, down to their `least` width. A
`key` column (an id, a status, a count, an account) is never cut: a person copies those
into the next command. What still does not fit wraps as the terminal wraps it.

Output that is not a terminal (less, grep, a file) is PIPED_WIDTH wide, unless COLUMNS
says otherwise: a row stays one line for grep.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from rich.text import Text

    from outbox.cli.common import SafeConsole

#: columns of output that is not a terminal and has no COLUMNS: a row per line.
PIPED_WIDTH = 200
#: characters between two columns
GAP = 1

Kind = Literal["key", "text", "note"]


@dataclass(frozen=True)
class Column:
    """One column: its header, what may happen to it, and the narrowest it may become.

    :param kind: `key` is never cut; `text` is cut after every note; `note` is cut first.
    :param least: characters a cut column keeps at the least (its header's length at most).
    :param right: numbers, aligned on the right.
    """

    name: str
    kind: Kind = "text"
    least: int = 8
    right: bool = False


def key_column(name: str, *, right: bool = False) -> Column:
    return Column(name, "key", right=right)


def text_column(name: str, least: int = 8) -> Column:
    return Column(name, "text", least)


def note_column(name: str, least: int = 6) -> Column:
    return Column(name, "note", least)


def listing_console() -> SafeConsole:
    """Where a listing goes: the terminal at its width, else PIPED_WIDTH (or COLUMNS)."""
    from outbox.cli.common import SafeConsole

    console = SafeConsole()
    if console.is_terminal or os.environ.get("COLUMNS"):
        return console
    return SafeConsole(width=PIPED_WIDTH)


def fitted_widths(columns: Sequence[Column], natural: Sequence[int], width: int) -> list[int]:
    """Each column's width so that the row fits `width`, cutting columns in the fixed order:
    notes first, then text columns from the right; keys never."""
    widths = list(natural)
    excess = sum(widths) + GAP * (len(widths) - 1) - width
    order = [i for i, c in enumerate(columns) if c.kind == "note"]
    order += [i for i in reversed(range(len(columns))) if columns[i].kind == "text"]
    for i in order:
        if excess <= 0:
            break
        floor = min(widths[i], max(columns[i].least, 1))
        cut = min(excess, widths[i] - floor)
        widths[i] -= cut
        excess -= cut
    return widths


def listing_table(
    columns: Sequence[Column],
    rows: Sequence[Sequence[str | Text | None]],
    *,
    width: int,
) -> Text:
    """The lines of the listing of `rows` (strings are shown as written, never as markup;
    None is blank), its columns cut to fit `width` characters. Print it with print_listing.

    Laid out here rather than by Rich's Table: the widths are decided above already, and
    the Table's own layout took 50 ms for a page of 50 events, a fifth of a listing."""
    from rich.text import Text

    from outbox.cli.common import visible

    def text(cell: str | Text | None) -> Text:
        if isinstance(cell, Text):
            return cell.copy()
        return Text(visible(cell or ""))

    header = [Text(column.name) for column in columns]
    cells = [[text(cell) for cell in row] for row in rows]
    natural = [max(t.cell_len for t in column) for column in zip(header, *cells, strict=True)]
    widths = fitted_widths(columns, natural, width)

    def line(row: list[Text]) -> Text:
        joined = Text(end="")
        for i, (column, size, cell) in enumerate(zip(columns, widths, row, strict=True)):
            cell.truncate(size, overflow="ellipsis")
            cell.align("right" if column.right else "left", size)
            if i:
                joined.append(" " * GAP)
            joined.append_text(cell)
        return joined

    lines = [line(header), *(line(row) for row in cells)]
    lines[0].stylize("bold")
    return Text("\n").join(lines)


def print_listing(
    columns: Sequence[Column],
    rows: Sequence[Sequence[str | Text | None]],
    console: SafeConsole | None = None,
) -> None:
    """A listing for people (`--json` is for scripts), fitted to where it is printed; a
    line wider still (its keys alone are) is left for the terminal to wrap."""
    console = console or listing_console()
    lines = listing_table(columns, rows, width=console.width)
    console.print(lines, highlight=False, soft_wrap=True)
