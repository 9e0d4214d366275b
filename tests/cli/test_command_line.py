"""The command line itself: one-line usage errors, help a person can read, version, start-up."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from outbox.cli.command_line import reflowed
from tests.cli.conftest import stored


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("events", "list", "--status", "finished"), "Invalid value for '--status': 'finished'"),
        (("events", "list", "--limit", "0"), "Invalid value for '--limit'"),
        (("events", "lst"), "No such command 'lst'"),
        (("events", "show"), "Missing argument"),
        (("purge", "--older-than", "90d", "--force"), "No such option: --force"),
        (("packs", "load", "/nowhere.toml"), "does not exist"),
    ],
)
def test_a_usage_error_is_one_line_and_exit_2(cli, args, says):
    ran = cli(*args, columns="80")
    assert ran.code == 2
    assert ran.stdout == ""
    [line] = ran.stderr.splitlines()
    assert line.startswith("error: ") and says in line
    assert line.endswith("--help`)")  # where to read more
    assert "╭" not in ran.stderr and "Value error" not in line


def test_no_arguments_prints_the_help(cli):
    ran = cli()
    assert "Usage: outbox" in ran.stdout and "events" in ran.stdout


def test_help_shows_no_type_after_flags_and_keeps_sentences_whole(cli):
    ran = cli("events", "replay", "--help", columns="200")
    assert ran.code == 0
    assert "<bool>" not in ran.stdout
    assert "--dry-run" in ran.stdout and "--status" in ran.stdout
    # the docstring's second paragraph, one line at 200 columns (its source breaks it twice)
    assert (
        "Name events by id, or select them with filters (e.g. --status dead --source stripe "
        "--since 2d). Rows still pending or processing are refused"
    ) in ran.stdout
    assert "<bool>" not in cli("--help", columns="80").stdout


def test_reflowing_joins_a_paragraph_and_keeps_paragraphs_and_verbatim_blocks():
    doc = """First line.

        Second paragraph,
        broken in the source.

        \b
        kept
        as is
    """
    assert (
        reflowed(doc) == "First line.\n\nSecond paragraph, broken in the source.\n\n\b\nkept\nas is"
    )


def test_version_and_shell_completion(cli):
    from importlib.metadata import version

    ran = cli("--version")
    assert ran.code == 0 and ran.stdout.strip() == f"outbox {version('webhook-outbox')}"
    completion = cli("--show-completion", "bash", _typer_complete_shell="bash")
    assert completion.code == 0 and "_OUTBOX_COMPLETE" in completion.stdout


def test_the_command_leaves_its_objects_to_the_end_of_the_process_not_to_a_collector():
    probe = (
        "import atexit, gc, sys\n"
        "atexit.register(lambda: print('frozen', gc.get_freeze_count() > 0))\n"
        "sys.argv = ['outbox', '--version']\n"
        "from outbox.cli import main\n"
        "main()"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0
    assert done.stdout.splitlines()[-1] == "frozen True"


def imported_by(code: str, env: dict[str, str]) -> tuple[set[str], str]:
    """The top-level packages a fresh interpreter has loaded after running `code`, and what
    `code` printed."""
    loaded = "sorted({m.split('.')[0] for m in sys.modules})"
    probe = f"{code}\nimport sys, json\nprint(json.dumps({loaded}))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=60
    )
    *printed, modules = done.stdout.splitlines()
    return set(json.loads(modules)), "\n".join(printed)


def test_help_loads_no_database_settings_driver_broker_or_domain():
    at_help, _ = imported_by("import outbox.cli", {"PATH": "/usr/bin:/bin"})
    assert not at_help & {"sqlalchemy", "pydantic", "psycopg", "redis", "domain"}


@pytest.mark.parametrize(
    ("command", "says"),
    [
        (["events", "list"], "evt_listed"),
        (["events", "list", "--status", "pending", "--limit", "5", "--type", "*"], "evt_listed"),
        (["events", "tail", "--last", "3"], "evt_listed"),
        (["events", "stats"], "pending"),
    ],
)
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the embedded default
def test_reads_on_sqlite_load_no_sqlalchemy_pydantic_driver_broker_or_domain(
    database_url, engine, command, says
):
    stored(engine, delivery_id="evt_listed")
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": database_url, "COLUMNS": "200"}
    loaded, printed = imported_by(
        "import sys\nfrom outbox.cli import app\n"
        f"try:\n    app({command!r})\nexcept SystemExit:\n    pass",
        env,
    )
    assert says in printed and "sqlite3" in loaded  # it did read the database
    heavy = {"sqlalchemy", "psycopg", "redis", "dramatiq", "githubkit", "stripe", "domain"}
    # pydantic: Typer's conversion of the options (option_values.py) and the settings
    # (reader_settings.py), which would cost a listing more than its own work
    assert not loaded & {*heavy, "processors", "pydantic", "pydantic_settings"}
