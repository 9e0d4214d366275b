"""`outbox receive FILE`: a payload through the handlers in-process, printed; bad input exit 2."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from domain.account_opening import ensure_account
from domain.installations import InstallationFacts, record_installation
from outbox.db import transaction, utcnow
from outbox.models import WebhookEvent
from tests.cli.conftest import Cli
from tests.conftest import CORPUS
from tests.examples.installing import install_example

INSTALLATION_CREATED = CORPUS / "github/installation/created.payload.json"


def stored_events(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(WebhookEvent)).scalar_one())


def written(tmp_path: Path, document: Any, name: str = "payload.json") -> str:
    path = tmp_path / name
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return str(path)


def test_a_github_payload_is_applied_in_a_throwaway_database_and_its_effects_printed(
    cli: Cli, engine: Engine
):
    ran = cli("receive", str(INSTALLATION_CREATED), "--event", "installation")
    assert ran.code == 0, ran.stderr
    lines = ran.stdout.splitlines()
    assert lines[0] == "event 1  github installation.created: done  (throwaway database)"
    assert lines[1] == "handler  record_installation"
    assert lines[2] == "effects (2)"
    assert lines[3].startswith("  installations: id=957387, account_id=21031067")
    assert stored_events(engine) == 0  # the configured database never saw it


def test_with_the_configured_database_the_event_and_its_effects_stay(cli: Cli, engine: Engine):
    ran = cli("receive", str(INSTALLATION_CREATED), "--event", "installation",
              "--configured-database", "--json")  # fmt: skip
    assert ran.code == 0, ran.stderr
    [line] = ran.json_lines()
    assert (line["outcome"], line["handler"], line["database"]) == (
        "done",
        "record_installation",
        "configured database",
    )
    assert sorted(e["kind"] for e in line["effects"]) == [
        "installation_repositories",
        "installations",
    ]
    assert stored_events(engine) == 1
    shown = cli("events", "show", str(line["id"]))
    assert "installations: id=957387" in shown.stdout


def test_an_event_nothing_handles_is_skipped_and_says_so(cli: Cli):
    comment = CORPUS / "github/issue_comment/created.payload.json"
    ran = cli("receive", str(comment), "--event", "issue_comment")
    assert ran.code == 0
    assert ran.stdout.splitlines()[:2] == [
        "event 1  github issue_comment.created: skipped  (throwaway database)",
        "note  no handler for github issue_comment.created",
    ]


@pytest.fixture
def pr_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The example package installed, and a comment asking it for a pull request."""
    install_example("pr-command", tmp_path / "site", monkeypatch)
    payload = json.loads((CORPUS / "github/issue_comment/created.payload.json").read_text())
    payload["installation"] = {"id": 957387}
    payload["comment"]["body"] = "/outbox pr Add a contributing guide"
    return written(tmp_path, payload, "comment.json")


def installed(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as session:
        now = utcnow()
        ensure_account(
            session, 21031067, login="Codertocat", kind="User", now=now, welcome_credits=Decimal(9)
        )
        facts = InstallationFacts(957387, 21031067, "Codertocat", "User", 1, "all", {}, False)
        record_installation(session, facts, now=now, event_id=None)


def test_an_installed_packages_handler_runs_and_a_second_delivery_makes_no_second_job(
    cli: Cli, pr_command: str, sessions: sessionmaker[Session]
):
    installed(sessions)
    first = cli("receive", pr_command, "--event", "issue_comment", "--configured-database")
    assert first.code == 0, first.stderr
    assert first.stdout.splitlines()[1] == "handler  pr_command"
    assert "  pr_jobs: id=1, status=pending, repository=Codertocat/Hello-World" in first.stdout
    again = cli("receive", pr_command, "--event", "issue_comment", "--configured-database")
    assert again.code == 0
    assert "note  comment 492700400 already made job 1" in again.stdout.splitlines()


def test_a_handler_that_fails_is_exit_1_with_its_error_as_a_worker_leaves_it(
    cli: Cli, pr_command: str
):
    ran = cli("receive", pr_command, "--event", "issue_comment")  # a throwaway: no installation
    assert ran.code == 1
    assert ran.stdout.splitlines()[:3] == [
        "event 1  github issue_comment.created: pending  (throwaway database)",
        "handler  pr_command",
        "error  RetryLater: installation 957387 is not known yet",
    ]


@pytest.mark.parametrize(
    ("content", "args", "says"),
    [
        ("{not json", ("--event", "push"), "the file is not JSON"),
        ("[1, 2]", ("--event", "push"), "not a JSON object"),
        ('{"id": "evt_1"}', (), "not a Stripe event"),
        ("{}", ("--event", "Push\x1b[2J"), "is not a GitHub event name"),
        ('{"id": "evt_\\u0000", "object": "event", "type": "x"}', (), "id holds a NUL character"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_and_stores_nothing(
    cli: Cli, engine: Engine, tmp_path: Path, content: str, args: tuple[str, ...], says: str
):
    ran = cli("receive", written(tmp_path, content), *args, "--configured-database")
    assert ran.code == 2
    [line] = ran.stderr.splitlines()
    assert line.startswith("error: ") and says in line and "\x1b" not in line
    assert stored_events(engine) == 0


def test_a_missing_file_is_exit_2(cli: Cli, tmp_path: Path):
    ran = cli("receive", str(tmp_path / "nowhere.json"), "--event", "push")
    assert ran.code == 2 and ran.stderr.startswith("error: cannot read ")


def test_a_stripe_event_already_stored_is_refused_with_how_to_apply_it_again(
    cli: Cli, tmp_path: Path
):
    event = {
        "id": "evt_receive_twice",
        "object": "event",
        "type": "invoice.paid",
        "livemode": False,
        "data": {"object": {"id": "in_1"}},
    }
    path = written(tmp_path, event)
    cli("receive", path, "--configured-database")
    ran = cli("receive", path, "--configured-database")
    assert ran.code == 1
    assert ran.stderr.strip() == (
        "error: stripe delivery evt_receive_twice is already stored as event 1 (done); "
        "`outbox events replay 1` applies it again"
    )


def test_a_handler_table_that_names_nothing_is_one_line_and_exit_2(cli: Cli):
    ran = cli("receive", str(INSTALLATION_CREATED), "--event", "installation",
              handler_table="nowhere.handlers:table")  # fmt: skip
    assert ran.code == 2
    assert (
        ran.stderr.strip()
        == "error: HANDLER_TABLE=nowhere.handlers:table: No module named 'nowhere'"
    )
