"""Stored strings come from webhooks: printing them must never crash, hide text or reach
the terminal as control sequences; `--json` prints them exactly."""

from __future__ import annotations

import pytest

from tests.cli.conftest import kill, stored

HOSTILE_TYPES = [
    "[/x]",  # a closing tag with nothing open: Rich raised MarkupError
    "[link=https://evil.example]click[/link]",  # hid its text behind a link
    "evil\x1b]0;owned\x07\x1b[2J",  # retitled the window, cleared the screen
    "\u202etxt.exe",  # reversed what follows it
]


@pytest.mark.parametrize("event_type", HOSTILE_TYPES)
def test_events_list_show_and_replay_print_hostile_strings_as_text(
    cli, engine, sessions, event_type
):
    event_id = stored(engine, event_type=event_type, delivery_id=f"[/d]\x1b[31m{event_type}")
    kill(sessions, event_id, error=f"[bold]{event_type}\x1b[0m")

    for args in (
        ("events", "list"),
        ("events", "show", str(event_id)),
        ("events", "replay", "--dry-run", str(event_id)),
    ):
        ran = cli(*args)
        assert ran.code == 0, (args, ran.stdout, ran.stderr)
        printed = ran.stdout + ran.stderr
        assert "\x1b" not in printed and "\u202e" not in printed and "\x07" not in printed
        if args[1] != "replay":  # the plan names no delivery id
            assert "\\x1b" in printed  # shown, not sent
        if event_type.startswith("[link"):
            assert "[link=https://evil.example]click[/link]" in printed


def test_json_output_keeps_hostile_strings_exact(cli, engine, sessions):
    event_type = HOSTILE_TYPES[2]
    event_id = stored(engine, event_type=event_type)
    [row] = cli("events", "list", "--json").json_lines()
    assert row["id"] == event_id and row["event_type"] == event_type
    [detail] = cli("events", "show", str(event_id), "--json").json_lines()
    assert detail["event_type"] == event_type


def test_an_unknown_reference_with_markup_is_one_plain_line(cli, engine):
    ran = cli("events", "show", "[/x]\x1b[2J")
    assert ran.code == 1
    assert "\x1b" not in ran.stderr and "[/x]" in ran.stderr
    assert len(ran.stderr.strip().splitlines()) == 1
