"""`outbox send`: built-in examples by name, files and folders, signed and posted to an ingress."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from ingress.app import create_app
from outbox.cli.send import route_url
from outbox.models import WebhookEvent
from outbox.settings import Settings
from tests.cli.conftest import Cli
from tests.conftest import CORPUS
from tests.ingress.conftest import RecordingDoorbell, served

STRIPE_ROUTE = "/webhooks/stripe"


@pytest.fixture
def live_url(settings: Settings, engine: Engine) -> Iterator[str]:
    with served(create_app(settings, engine=engine, doorbell=RecordingDoorbell())) as url:
        yield url


def stored(engine: Engine) -> list[tuple[str, str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(WebhookEvent.source, WebhookEvent.event_type, WebhookEvent.delivery_id).order_by(
                WebhookEvent.id
            )
        )
        return [tuple(row) for row in rows]  # type: ignore[misc]


def test_list_names_the_built_in_examples_of_both_providers(cli: Cli):
    ran = cli("send", "--list")
    assert ran.code == 0
    lines = ran.stdout.splitlines()
    assert "github  pull_request.opened" in lines
    assert "github  installation.created" in lines
    assert "stripe  checkout.session.completed" in lines
    assert cli("send", "stripe", "--list").stdout.splitlines()[0].startswith("stripe  ")


def test_a_built_in_github_example_is_posted_with_its_event_and_says_where(
    cli: Cli, live_url: str, engine: Engine
):
    ran = cli("send", "github", "pull_request.opened", "--url", live_url)
    assert ran.code == 0, ran.stderr
    [(source, event_type, delivery)] = stored(engine)
    assert (source, event_type) == ("github", "pull_request.opened")
    assert ran.stdout.startswith(
        f"posted pull_request.opened to {live_url}/webhooks/github as {delivery}: 200 "
    )


def test_a_built_in_stripe_example_is_an_event_of_that_type_posted_to_a_full_route(
    cli: Cli, live_url: str, engine: Engine
):
    ran = cli("send", "stripe", "checkout.session.completed", "--url", live_url + STRIPE_ROUTE)
    assert ran.code == 0, ran.stderr
    [(source, event_type, delivery)] = stored(engine)
    assert (source, event_type) == ("stripe", "checkout.session.completed")
    assert (
        delivery.startswith("evt_") and f"to {live_url}{STRIPE_ROUTE} as {delivery}" in ran.stdout
    )


def test_count_sends_that_many_new_deliveries_through_one_command(
    cli: Cli, live_url: str, engine: Engine
):
    ran = cli("send", "stripe", "invoice.paid", "--url", live_url, "--count", "5")
    assert ran.code == 0, ran.stderr
    rows = stored(engine)
    assert len({delivery for _, _, delivery in rows}) == 5
    assert {event_type for _, event_type, _ in rows} == {"invoice.paid"}
    assert "sent 5 in " in ran.stdout and "5 answered 2xx, 0 not" in ran.stdout


def test_a_folder_in_the_github_layout_sends_each_file_with_its_folders_event(
    cli: Cli, live_url: str, engine: Engine, tmp_path: Path
):
    for relative in ("installation/created.payload.json", "ping/payload.json"):
        (tmp_path / "github" / relative).parent.mkdir(parents=True)
        shutil.copy(CORPUS / "github" / relative, tmp_path / "github" / relative)
    ran = cli("send", "github", str(tmp_path / "github"), "--url", live_url)
    assert ran.code == 0, ran.stderr
    assert sorted(event_type for _, event_type, _ in stored(engine)) == [
        "installation.created",
        "ping",
    ]


def test_a_github_file_whose_event_cannot_be_told_is_refused_naming_event(
    cli: Cli, live_url: str, engine: Engine, tmp_path: Path
):
    payload = tmp_path / "delivery.json"
    shutil.copy(CORPUS / "github/pull_request/opened.payload.json", payload)
    refused = cli("send", "github", str(payload), "--url", live_url)
    assert refused.code == 2 and stored(engine) == []
    assert "--event" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    sent = cli("send", "github", str(payload), "--event", "pull_request", "--url", live_url)
    assert sent.code == 0, sent.stderr
    assert [event_type for _, event_type, _ in stored(engine)] == ["pull_request.opened"]


def test_a_stripe_event_file_keeps_its_id_and_a_bare_object_needs_a_type(
    cli: Cli, live_url: str, engine: Engine, tmp_path: Path
):
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"id": "evt_from_file", "object": "event", "type": "x.y"}))
    assert cli("send", "stripe", str(event), "--url", live_url).code == 0
    bare = CORPUS / "stripe/objects/customer.json"
    refused = cli("send", "stripe", str(bare), "--url", live_url)
    assert refused.code == 2 and "--type" in refused.stderr
    wrapped = cli("send", "stripe", str(bare), "--type", "customer.updated", "--url", live_url)
    assert wrapped.code == 0, wrapped.stderr
    first, second = stored(engine)
    assert first[1:] == ("x.y", "evt_from_file") and second[1] == "customer.updated"


@pytest.mark.parametrize(
    "args, says",
    [
        (["send", "github", "pull_request.nope"], "outbox send github --list"),
        (["send", "gitlab", "push"], "unknown provider 'gitlab'"),
        (["send", "github"], "give github or stripe"),
        (["send", "github", "push", "--count", "0"], "--count must be at least 1"),
        (["send", "github", "push", "--url", "localhost:8000"], "--url must be an http(s) URL"),
        (["send", "github", "push", "--url", "http://h/webhooks/stripe"], "the stripe route"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(cli: Cli, args: list[str], says: str):
    ran = cli(*args)
    assert ran.code == 2
    assert says in ran.stderr and len(ran.stderr.strip().splitlines()) == 1


def test_an_ingress_that_does_not_answer_is_one_line_and_exit_1(cli: Cli):
    ran = cli("send", "github", "ping", "--url", "http://127.0.0.1:1")
    assert ran.code == 1
    assert "could not reach the ingress at http://127.0.0.1:1/webhooks/github" in ran.stderr


@pytest.mark.parametrize(
    "url, route",
    [
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000/webhooks/github"),
        ("http://127.0.0.1:8000/", "http://127.0.0.1:8000/webhooks/github"),
        ("https://abc.example/hooks/", "https://abc.example/hooks/webhooks/github"),
        ("http://h:1/webhooks/github/", "http://h:1/webhooks/github"),
        ("http://h:1/x/webhooks/github?q=1", "http://h:1/x/webhooks/github?q=1"),
    ],
)
def test_url_is_a_base_or_the_route_itself(url: str, route: str):
    assert route_url(url, "github") == route
