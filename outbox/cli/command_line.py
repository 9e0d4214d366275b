"""How the `outbox` command line itself behaves: usage errors, help text, `--version`.

- A usage error (an unknown option, a bad choice, a missing argument) is one line on
  stderr, `error: …`, and exit 2, like the commands' own errors (common.py): scripts
  grep them, and Typer's boxed panel cut the message over several lines.
- Help: a flag that takes no value shows no type after it (Typer writes `<bool>`), and a
  docstring's paragraphs are reflowed to the terminal's width instead of keeping the
  source's line breaks, which cut sentences mid-line at 80 columns.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Sequence
from typing import Any

import typer
from typer.core import TyperGroup, TyperOption

from outbox.cli.common import EXIT_FAILED, EXIT_USAGE, error_line

PACKAGE = "webhook-outbox"  #: the distribution whose version `outbox --version` prints


class OutboxGroup(TyperGroup):
    """The top `outbox` group: runs a command and turns Click's own errors into one line."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.TyperException as error:  # Click's errors (Typer carries its own Click)
            if type(error).__name__ != "NoArgsIsHelpError":  # that one printed the help
                error_line(usage_line(error))
            sys.exit(error.exit_code)
        except typer.Abort:
            error_line("aborted")
            sys.exit(EXIT_FAILED)
        sys.exit(result if isinstance(result, int) else 0)


def usage_line(error: typer.TyperException) -> str:
    """Click's message on one line, with where to read more when it is a usage error."""
    # Typer checks choices with pydantic, whose messages start "Value error, ".
    message = " ".join(error.format_message().replace("Value error, ", "").split())
    ctx = getattr(error, "ctx", None)
    if error.exit_code == EXIT_USAGE and ctx is not None:
        return f"{message} (see `{ctx.command_path} --help`)"
    return message


def _flag_type(self: TyperOption, ctx: Any) -> str | None:
    """The type shown after an option in help: none for a flag, which takes no value."""
    if self.is_flag:
        return None
    return _typer_option_type(self, ctx)


_typer_option_type = TyperOption.display_type_rich


def show_no_type_after_flags() -> None:
    """Typer (0.29) writes `<bool>` after every flag, `--help` included; flags take no value."""
    TyperOption.display_type_rich = _flag_type  # type: ignore[method-assign,assignment]


def reflowed(doc: str) -> str:
    """A docstring's paragraphs, each on one line: the help formatter wraps them to the
    terminal. A paragraph that starts with \\b keeps its lines (Click's convention)."""
    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(p if p.startswith("\b") else " ".join(p.split()) for p in paragraphs)


def reflow_help(app: typer.Typer) -> None:
    """Give every command and group of `app` its docstring reflowed as its help."""
    for command in app.registered_commands:
        if command.help is None and command.callback is not None and command.callback.__doc__:
            command.help = reflowed(command.callback.__doc__)
    for group in app.registered_groups:
        if group.typer_instance is not None:
            info = group.typer_instance.info
            if isinstance(info.help, str):
                info.help = reflowed(info.help)
            reflow_help(group.typer_instance)


def version_text() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"outbox {version(PACKAGE)}"
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "outbox (version unknown: not installed)"


def print_version(asked: bool) -> None:
    """`--version`: print it and stop before any command runs."""
    if asked:
        typer.echo(version_text())
        raise typer.Exit()
