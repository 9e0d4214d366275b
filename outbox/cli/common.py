"""What every command shares: exit codes, error messages without tracebacks, output modes."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, NoReturn, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from outbox.fields import as_int64

if TYPE_CHECKING:
    from outbox.settings import Settings


def get_settings() -> Settings:
    """The process's one settings object (outbox/settings.py), loaded on first use:
    pydantic-settings costs a tenth of a second that `outbox --help` need not pay."""
    from outbox.settings import get_settings as settings_of_the_process

    return settings_of_the_process()


EXIT_OK = 0
EXIT_FAILED = 1  #: something asked for failed, or nothing matched
EXIT_USAGE = 2  #: the command line itself is wrong

P = ParamSpec("P")
R = TypeVar("R")

#: Characters a terminal acts on instead of showing: C0 and C1 controls (ESC starts a
#: sequence that can move the cursor, retitle the window or hide text) and the bidi
#: controls that reorder what follows. Stored strings come from webhooks: untrusted.
_HIDDEN = {
    code: f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    for code in [*range(0x20), *range(0x7F, 0xA0), 0x200E, 0x200F, 0x2028, 0x2029,
                 *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
}  # fmt: skip
_HIDDEN_BUT_LINES = {code: text for code, text in _HIDDEN.items() if chr(code) not in "\n\t"}


def visible(text: str, *, lines: bool = False) -> str:
    """`text` with every control character written as an escape (`\\x1b`); newlines and
    tabs kept when `lines`. For plain output (typer.echo) of stored or given strings."""
    return text.translate(_HIDDEN_BUT_LINES if lines else _HIDDEN)


def shown(value: object) -> str:
    """A stored or given value for Rich markup: controls escaped, then markup escaped, so
    "[/x]" or "[link=…]" in an event type prints as itself."""
    return escape(visible(str(value)))


class SafeConsole(Console):
    """A Console that never sends a control character of its text to the terminal.

    Every string it renders (print, table cells) goes through render_str: made visible
    there, whatever the caller forgot. Markup must still be escaped where the text is
    untrusted (`shown`, SafeTable); JSON payloads go through print_json, made visible too.
    """

    def render_str(self, text: str, **kwargs: Any) -> Any:
        return super().render_str(visible(text, lines=True), **kwargs)

    def print_json(self, json: str | None = None, *, data: Any = None, **kwargs: Any) -> None:
        import json as json_module

        document = json_module.loads(json) if json is not None else data
        super().print_json(data=_visible_json(document), **kwargs)


def _visible_json(value: Any) -> Any:
    if isinstance(value, str):
        return visible(value)
    if isinstance(value, dict):
        return {visible(str(k)): _visible_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_visible_json(v) for v in value]
    return value


class SafeTable(Table):
    """A Rich Table whose string cells are text, never markup: stored strings go in as
    they are. A cell meant to be styled is given as rich.text.Text."""

    def add_row(self, *renderables: Any, **kwargs: Any) -> None:
        super().add_row(
            *(shown(cell) if isinstance(cell, str) else cell for cell in renderables), **kwargs
        )


#: Errors are one line whatever the terminal's width (scripts grep them): never wrapped.
err_console = SafeConsole(stderr=True, soft_wrap=True)


INT64_MAX = 2**63 - 1  #: the largest id a BIGINT column holds


def id_argument(text: str, what: str) -> int:
    """An id or page number given on the command line: 1 to INT64_MAX in ASCII digits,
    else exit 2 with one line (an int option would let "²" or 2**64 reach the database)."""
    value = as_int64(text.strip())
    if value is None or value < 1:
        usage_error(f"{what} {_quoted(text)} is not a number from 1 to {INT64_MAX}")
    return value


def account_ref(text: str) -> str:
    """An account as given on the command line: a numeric id (checked as id_argument
    checks it) or a login; exit 2 for digits that cannot be an id."""
    ref = text.strip()
    if ref.isdigit():
        id_argument(ref, "account")
    return ref


def _quoted(text: str, cap: int = 40) -> str:
    return repr(text if len(text) <= cap else text[:cap] + "…")


def say(message: str) -> None:
    """typer.echo for a message that may carry stored or given strings: controls shown."""
    typer.echo(visible(message, lines=True))


def stdout_console(width: int | None = None) -> SafeConsole:
    return SafeConsole(width=width) if width else SafeConsole()


#: The `--json` switch of every listing command: one JSON object per line on stdout.
JSON_OPTION = typer.Option(False, "--json", help="One JSON object per line, for scripts.")


class CommandFailed(Exception):
    """A command could not do what it was asked; the message says what, for a person."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    raise CommandFailed(message, code)


def usage_error(message: str) -> NoReturn:
    raise CommandFailed(message, EXIT_USAGE)


def confirm_or_fail(question: str, refused: str) -> None:
    """Ask on stderr; anything but yes (no answer, no terminal) fails with `refused`."""
    try:
        if typer.confirm(question, err=True):
            return
    except typer.Abort:
        pass
    fail(f"{refused} (use --yes in scripts)")


def friendly_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn known failures into one line on stderr and the right exit code, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except CommandFailed as exc:
            err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, emoji=False)
            raise typer.Exit(exc.code) from None
        except Exception as exc:
            code = _explained(exc)
            if code is None:
                raise
            raise typer.Exit(code) from None

    return wrapper


def _explained(exc: Exception) -> int | None:
    """Print one line for a failure a person can act on; its exit code, None if unknown.

    The libraries' errors are looked at only once something failed, and SQLAlchemy's only
    when it is loaded: a command that succeeds never pays for importing them (start-up).
    """
    from pydantic import ValidationError

    from outbox.driver.errors import DatabaseError

    if isinstance(exc, ValidationError):  # a setting (environment variable) that is not valid
        for problem in exc.errors():
            name = ".".join(str(part) for part in problem["loc"]).upper()
            error_line(f"setting {name}: {problem['msg']}")
        return EXIT_USAGE
    if _handler_table_not_found(exc):
        error_line(str(exc))
        return EXIT_USAGE
    if isinstance(exc, DatabaseError):
        return _database_failed(exc.reason, exc.sqlstate)
    if "sqlalchemy" in sys.modules:
        from sqlalchemy.exc import OperationalError, ProgrammingError

        if isinstance(exc, (OperationalError, ProgrammingError)):
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            if isinstance(exc, ProgrammingError) and not _missing_table(reason):
                return None
            return _database_failed(reason, getattr(exc.orig, "sqlstate", None))
    return None


def _database_failed(reason: str, sqlstate: str | None) -> int:
    """One line for a database that cannot answer: not migrated, full, or unreachable."""
    if _missing_table(reason):
        error_line(f"database not migrated ({reason}): run `outbox migrate`")
    elif str(sqlstate or "").startswith("53"):
        # SQLSTATE class 53, insufficient resources: a full disk (53100), out of memory.
        error_line(f"database cannot write ({reason}): free space on its disk")
    else:
        error_line(f"database unreachable: {reason}")
    return EXIT_FAILED


def _handler_table_not_found(exc: Exception) -> bool:
    # Only a command that loaded the dispatch table can have failed to: the others need not
    # import the processors to find out.
    dispatch = sys.modules.get("outbox.dispatch")
    return dispatch is not None and isinstance(exc, dispatch.HandlerTableNotFound)


def error_line(message: str) -> None:
    """`error: …` on stderr, one line, the message shown as written (never markup)."""
    err_console.print(f"[red]error:[/red] {escape(message)}", highlight=False, emoji=False)


def _missing_table(reason: str) -> bool:
    # SQLite says "no such table: x"; Postgres 'relation "x" does not exist'.
    return reason.startswith("no such table") or (
        reason.startswith("relation") and reason.endswith("does not exist")
    )


def print_json_lines(rows: Iterable[dict[str, Any]]) -> None:
    """One JSON object per line, for scripts (`--json`): times in ISO-8601 UTC, amounts
    (decimals) as strings so that no float ever rounds them."""
    for row in rows:
        sys.stdout.write(json.dumps(row, default=json_value, ensure_ascii=False) + "\n")


def json_value(value: Any) -> Any:
    """What `--json` writes for a value JSON has no type for."""
    from datetime import UTC, date, datetime
    from decimal import Decimal

    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return str(value)
