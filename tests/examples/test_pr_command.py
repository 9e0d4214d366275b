"""The example package examples/pr-command, installed through its entry point: a comment
`/outbox pr <title>` becomes one paid pull request, against the fake GitHub and Stripe."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, select
from starlette.testclient import TestClient

from domain import jobs
from ingress.app import create_app
from outbox.db import utcnow
from outbox.models import Status, WebhookEvent
from processors import runtime as runtimes
from processors.apply import Outcome, process_pass
from processors.jobs import JobOutcome, UsageOutcome
from tests.conftest import CORPUS
from tests.domain.jobs_world import INSTALLATION, REPO, World
from tests.factories import github_headers

pytestmark = pytest.mark.usefixtures("pr_command_installed")

COMMENT_ID = 492700400


def comment(body: str, *, association: str = "OWNER", comment_id: int = COMMENT_ID) -> bytes:
    """GitHub's own `issue_comment.created` example, from an installation of the App."""
    payload: dict[str, Any] = json.loads(
        (CORPUS / "github/issue_comment/created.payload.json").read_text()
    )
    payload["installation"] = {"id": INSTALLATION, "node_id": "MDIzOkludGVncmF0aW9uMQ=="}
    payload["comment"].update(body=body, author_association=association, id=comment_id)
    return json.dumps(payload).encode()


class Service:
    """The real ingress and apply step on the world's database, with every installed handler."""

    def __init__(self, world: World, engine: Engine, client: TestClient) -> None:
        self.world = world
        self.runtime = runtimes.configure(world.settings, engine=engine)
        self.client = client

    def deliver(self, body: bytes, delivery: str | None = None) -> dict[str, Any]:
        headers = github_headers(body, "issue_comment", delivery=delivery)
        answer = self.client.post("/webhooks/github", content=body, headers=headers)
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    def process(self, *ids: int) -> dict[Outcome, int]:
        return process_pass(self.runtime, list(ids))

    def row(self, event_id: int) -> WebhookEvent:
        with self.world.sessions() as session:
            return session.get_one(WebhookEvent, event_id)

    def jobs(self) -> list[jobs.PrJob]:
        with self.world.sessions() as session:
            return list(session.scalars(select(jobs.PrJob).order_by(jobs.PrJob.id)))


@pytest.fixture
def service(world: World, engine: Engine) -> Iterator[Service]:
    world.install(credits=Decimal(10))
    world.link_customer()
    with TestClient(create_app(world.settings, engine=engine)) as client:  # starts its writer
        yield Service(world, engine, client)


def test_a_command_becomes_one_pull_request_one_debit_and_one_usage_record_even_delivered_twice(
    service: Service, world: World
):
    body = comment("/outbox pr Add a contributing guide\r\n\r\nThe README links to none.")
    delivery = str(uuid.uuid4())
    first = service.deliver(body, delivery)
    assert service.deliver(body, delivery) == {"id": first["id"], "duplicate": True}
    redelivered = service.deliver(body)  # the same comment under a new delivery id
    assert redelivered["duplicate"] is False

    assert service.process(first["id"], redelivered["id"]) == {Outcome.DONE: 2}
    [job] = service.jobs()
    assert service.row(first["id"]).last_error is None  # it had an effect: the job
    assert service.row(redelivered["id"]).last_error == (
        f"comment {COMMENT_ID} already made job {job.id}"
    )
    assert (job.title, job.repository, job.installation_id) == (
        "Add a contributing guide",
        REPO,
        INSTALLATION,
    )
    assert job.event_id == first["id"] and job.required_credits == Decimal(3)

    world.now = utcnow()
    assert world.work(job.id) == JobOutcome.SUCCESS
    [record] = world.usage()
    assert world.report(record.id) == UsageOutcome.REPORTED
    totals = world.totals()
    assert (totals.pull_requests, totals.debits, totals.usage_records, totals.meter_events) == (
        1,
        1,
        1,
        1,
    )
    assert totals.balance == Decimal(7)
    [pull] = world.github.pulls(REPO)
    assert pull["title"] == "Add a contributing guide"
    request = f".outbox/requests/comment-{COMMENT_ID}.md"
    assert world.github.files_on(REPO, job.head_branch)[request] == world.github.blob_sha(
        "# Add a contributing guide\n\nAsked for by @Codertocat in "
        f"https://github.com/Codertocat/Hello-World/issues/1#issuecomment-{COMMENT_ID}.\n"
    )


@pytest.mark.parametrize(
    ("body", "association", "reason"),
    [
        ("You are totally right!", "OWNER", "not a /outbox pr command"),
        ("/outbox prs please", "OWNER", "not a /outbox pr command"),
        ("/outbox pr Add a guide", "NONE", "by a commenter who may not ask for one (NONE)"),
        ("/outbox pr Add a guide", "CONTRIBUTOR", "may not ask for one (CONTRIBUTOR)"),
        ("/outbox pr   ", "OWNER", "/outbox pr without a title"),
        ("/outbox pr " + "x" * 101, "OWNER", "title over 100 characters"),
        ("/outbox pr Fix \x1b[2Jthe screen", "OWNER", "title with a control character"),
        ("/outbox pr Fix \u202ereversed", "OWNER", "title with a control character"),
        ("/outbox pr Fix \u2028two lines", "OWNER", "title with a control character"),
    ],
)
def test_a_comment_that_is_no_allowed_command_changes_nothing_and_says_why(
    service: Service, world: World, body: str, association: str, reason: str
):
    event = service.deliver(comment(body, association=association))
    assert service.process(event["id"]) == {Outcome.DONE: 1}
    row = service.row(event["id"])
    assert row.status == Status.DONE and reason in (row.last_error or "")
    assert service.jobs() == []
    assert world.totals().balance == Decimal(10)


def test_a_title_of_exactly_the_limit_is_taken(service: Service):
    event = service.deliver(comment("/outbox pr " + "é" * 100))
    assert service.process(event["id"]) == {Outcome.DONE: 1}
    [job] = service.jobs()
    assert job.title == "é" * 100


def test_a_command_from_an_installation_not_yet_known_waits_for_it(service: Service):
    payload = json.loads(comment("/outbox pr Add a guide"))
    payload["installation"]["id"] = INSTALLATION + 1
    event = service.deliver(json.dumps(payload).encode())
    assert service.process(event["id"]) == {Outcome.RETRY: 1}
    row = service.row(event["id"])
    assert row.status == Status.PENDING
    assert row.last_error == f"RetryLater: installation {INSTALLATION + 1} is not known yet"
    assert service.jobs() == []
