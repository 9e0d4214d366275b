"""`outbox jobs` and `outbox usage`: what they print, and their exit codes on bad input."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from outbox.cli import app
from outbox.db import utcnow
from outbox.settings import get_settings
from processors.jobs import JobOutcome, UsageOutcome
from tests.domain.jobs_world import INSTALLATION, LOGIN, REPO, World

runner = CliRunner()


@pytest.fixture
def cli(world: World, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.setenv("DATABASE_URL", database_url)
    get_settings.cache_clear()
    world.install()
    yield world
    get_settings.cache_clear()


def run(*args: str) -> Any:
    return runner.invoke(app, list(args))


def spec_file(tmp_path: Path, **changes: Any) -> Path:
    document: dict[str, Any] = {
        "account": LOGIN,
        "installation": INSTALLATION,
        "repository": REPO,
        "base_branch": "main",
        "title": "Bump the linter",
        "body": "",
        "files": [{"path": "a.txt", "content": "a\n"}, {"path": "README.md", "delete": True}],
        "required_credits": 2.5,
    }
    document.update(changes)
    path = tmp_path / "job.json"
    path.write_text(json.dumps(document))
    return path


def json_lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def test_submit_then_list_and_show(cli: World, tmp_path: Path) -> None:
    submitted = run("jobs", "submit", str(spec_file(tmp_path)), "--json")
    assert submitted.exit_code == 0, submitted.output
    [job] = json_lines(submitted.output)
    assert (job["status"], job["required_credits"], job["repository"]) == (
        "pending",
        "2.5000",
        REPO,
    )
    assert job["files"] == ["a.txt", "README.md (delete)"]

    listed = run("jobs", "list", "--json", "--status", "pending")
    assert listed.exit_code == 0 and [j["id"] for j in json_lines(listed.output)] == [job["id"]]
    shown = run("jobs", "show", str(job["id"]))
    assert shown.exit_code == 0 and "head_branch: outbox/job-" in shown.output
    table = run("jobs", "list", "--account", LOGIN)
    assert table.exit_code == 0 and REPO in table.output


def test_jobs_list_fits_80_columns_keeping_id_status_account_and_credits(cli: World) -> None:
    job_id = cli.submit()
    cli.github.fail("GET", "/pulls", status=404, body={"message": "Not Found " * 20})
    cli.work(job_id)
    table = runner.invoke(app, ["jobs", "list"], env={"COLUMNS": "80"})
    assert table.exit_code == 0, table.output
    header, row = [line for line in table.output.splitlines() if line.strip()]
    assert len(header) <= 80 and len(row) <= 80
    assert row.split()[:3] == [str(job_id), "failed", "21031067"] and "3.0000" in row
    assert "…" in row  # the long error gave way


def test_submitting_the_same_key_twice_says_so(cli: World, tmp_path: Path) -> None:
    path = spec_file(tmp_path, key="nightly-42")
    first, second = run("jobs", "submit", str(path)), run("jobs", "submit", str(path))
    assert first.exit_code == second.exit_code == 0
    assert "already submitted with key 'nightly-42'" in second.output


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        ("{not json", "not valid JSON"),
        ('{"account": 1}', "installation: a positive installation id"),
        ("[]", "a job spec is a JSON object"),
    ],
)
def test_a_bad_spec_file_is_a_usage_error(
    cli: World, tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "spec.json"
    if content is not None:
        path.write_text(content)
    result = run("jobs", "submit", str(path))
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert run("jobs", "list").exit_code == 1  # nothing was stored


def test_a_spec_for_an_unknown_account_fails(cli: World, tmp_path: Path) -> None:
    result = run("jobs", "submit", str(spec_file(tmp_path, account="ghost")))
    assert result.exit_code == 1 and "unknown account: ghost" in result.output


def test_show_and_retry_of_an_unknown_job_fail(cli: World) -> None:
    for command in ("show", "retry"):
        result = run("jobs", command, "4242")
        assert result.exit_code == 1 and "no job 4242" in result.output
    assert run("jobs", "show", "four").exit_code == 2
    assert run("jobs", "list", "--status", "lost").exit_code == 2


def test_retry_of_a_failed_job_and_of_a_successful_one(cli: World) -> None:
    job_id = cli.submit()
    cli.github.fail("GET", "/pulls", status=404)
    cli.work(job_id)
    retried = run("jobs", "retry", str(job_id))
    assert retried.exit_code == 0 and f"job {job_id} is pending" in retried.output
    cli.now = utcnow()  # the command made it due at the real time
    assert cli.work(job_id) is JobOutcome.SUCCESS
    refused = run("jobs", "retry", str(job_id))
    assert refused.exit_code == 1 and "already succeeded (pull request #1)" in refused.output


def test_usage_list_shows_unreported_records_and_why(cli: World) -> None:
    assert run("usage", "list").exit_code == 1
    cli.work(cli.submit())
    unreported = run("usage", "list", "--unreported", "--json")
    assert unreported.exit_code == 0
    [record] = json_lines(unreported.output)
    assert (record["state"], record["quantity"]) == ("waiting for a Stripe customer", "3.0000")

    cli.link_customer()
    cli.report(record["id"])
    assert run("usage", "list", "--unreported").exit_code == 1
    table = run("usage", "list", "--account", LOGIN)
    assert table.exit_code == 0 and "reported" in table.output
    assert run("usage", "list", "--account", "ghost").exit_code == 1


def stopped_for_an_operator(cli: World) -> int:
    """A record whose reports got no answer for a day: it waits for an operator."""
    cli.link_customer()
    cli.work(cli.submit())
    [record] = cli.usage()
    cli.stripe.fail("POST", "/meter_events", status=503, times=40)
    for _ in range(30):
        cli.report(record.id)
        cli.later(3600)
    cli.stripe.faults.clear()
    [stopped] = cli.usage()
    assert stopped.needs_operator_at is not None
    return record.id


def test_usage_resolve_reported_after_checking_stripe(cli: World) -> None:
    record_id = stopped_for_an_operator(cli)
    listed = json_lines(run("usage", "list", "--unreported", "--json").output)
    assert [r["state"] for r in listed] == ["needs operator"]
    assert "needs operator" in run("usage", "list").output

    resolved = run("usage", "resolve", str(record_id), "--reported")
    assert resolved.exit_code == 0, resolved.output
    assert f"usage record {record_id} is reported" in resolved.output
    [record] = json_lines(run("usage", "list", "--json").output)
    assert record["state"] == "reported"
    sent = len(cli.stripe.meter_requests)
    cli.now = utcnow() + timedelta(days=1)
    assert cli.report(record_id) is UsageOutcome.NOT_DUE
    assert len(cli.stripe.meter_requests) == sent and cli.stripe.meter_events == {}


def test_usage_resolve_resend_sends_it_once_under_a_new_identifier(cli: World) -> None:
    record_id = stopped_for_an_operator(cli)
    [stopped] = cli.usage()

    resolved = run("usage", "resolve", str(record_id), "--resend")
    assert resolved.exit_code == 0, resolved.output
    assert f"as identifier {stopped.identifier}:resend-1" in resolved.output
    cli.now = utcnow()
    assert cli.report(record_id) is UsageOutcome.REPORTED
    assert list(cli.stripe.meter_events) == [f"{stopped.identifier}:resend-1"]
    assert cli.stripe.meter_requests[-1]["idempotency_key"] == f"{stopped.identifier}:resend-1"


def test_usage_resolve_refuses_what_is_not_waiting_for_an_operator(cli: World) -> None:
    cli.work(cli.submit())
    [record] = cli.usage()
    neither = run("usage", "resolve", str(record.id))
    both = run("usage", "resolve", str(record.id), "--reported", "--resend")
    assert neither.exit_code == both.exit_code == 2
    assert "exactly one of --reported, --resend" in neither.output
    waiting = run("usage", "resolve", str(record.id), "--reported")
    assert waiting.exit_code == 1
    assert f"usage record {record.id} does not need an operator" in waiting.output
    unknown = run("usage", "resolve", "999", "--resend")
    assert unknown.exit_code == 1 and "no usage record 999" in unknown.output
    [unchanged] = cli.usage()
    assert unchanged.reported_at is None and unchanged.resends == 0
