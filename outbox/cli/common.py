"""What every command shares: exit codes, error messages without tracebacks, output modes."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterable
from typing import Any, NoReturn, ParamSpec, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from sqlalchemy.exc import OperationalError, ProgrammingError

EXIT_OK = 0
EXIT_FAILED = 1  #: something asked for failed, or nothing matched
EXIT_USAGE = 2  #: the command line itself is wrong

P = ParamSpec("P")
R = TypeVar("R")

#: Errors are one line whatever the terminal's width (scripts grep them): never wrapped.
err_console = Console(stderr=True, soft_wrap=True)

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


def friendly_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn known failures into one line on stderr and the right exit code, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except CommandFailed as exc:
            err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, emoji=False)
            raise typer.Exit(exc.code) from None
        except ValidationError as exc:  # a setting (environment variable) that is not valid
            for problem in exc.errors():
                name = ".".join(str(part) for part in problem["loc"]).upper()
                err_console.print(
                    f"[red]error:[/red] setting {name}: {escape(problem['msg'])}",
                    highlight=False,
                    emoji=False,
                )
            raise typer.Exit(EXIT_USAGE) from None
        except (OperationalError, ProgrammingError) as exc:
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            if _missing_table(reason):
                message = f"database not migrated ({reason}): run `outbox migrate`"
            elif isinstance(exc, ProgrammingError):
                raise
            elif _out_of_resources(exc.orig):
                message = f"database cannot write ({reason}): free space on its disk"
            else:
                message = f"database unreachable: {reason}"
            err_console.print(f"[red]error:[/red] {message}", highlight=False)
            raise typer.Exit(EXIT_FAILED) from None

    return wrapper


def _out_of_resources(error: BaseException | None) -> bool:
    # SQLSTATE class 53, insufficient resources: a full disk (53100), out of memory (53200).
    return str(getattr(error, "sqlstate", "") or "").startswith("53")


def _missing_table(reason: str) -> bool:
    # SQLite says "no such table: x"; Postgres 'relation "x" does not exist'.
    return reason.startswith("no such table") or (
        reason.startswith("relation") and reason.endswith("does not exist")
    )


def print_json_lines(rows: Iterable[dict[str, Any]]) -> None:
    """One JSON object per line, for scripts (`--json`)."""
    for row in rows:
        sys.stdout.write(json.dumps(row, default=str, ensure_ascii=False) + "\n")
