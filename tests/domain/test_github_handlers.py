"""The GitHub App's handlers: every corpus example is applied or left to be skipped; an
installation opens its installer's account (welcome grant once) and, when enabled, one
onboarding job per repository; a malformed payload is a permanent failure."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from domain import balances
from domain import installation_repositories as repos
from domain import installations as inst
from domain.accounts import Account
from domain.handlers import handler_table
from domain.jobs import JobStatus, PrJob
from outbox.handling import PermanentFailure
from outbox.settings import Settings
from tests.domain.github_support import (
    GITHUB_CORPUS,
    apply,
    context,
    deliver,
    event_type_of,
    example,
)

HANDLED = {
    "installation.created",
    "installation.deleted",
    "installation.suspend",
    "installation.unsuspend",
    "installation.new_permissions_accepted",
    "installation_repositories.added",
    "installation_repositories.removed",
    "github_app_authorization.revoked",
}


def test_every_corpus_example_is_applied_or_left_to_be_skipped(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    table = handler_table(settings)
    assert {t for (source, t) in table if source == "github"} == HANDLED
    seen: set[str] = set()
    for path in sorted(GITHUB_CORPUS.glob("*/*.json")):
        payload = json.loads(path.read_text())
        event_type = event_type_of(path, payload)
        handled = apply(sessions, settings, context(event_type, payload))
        assert handled == (event_type in HANDLED), path
        seen.add(event_type)
    assert seen >= HANDLED  # the corpus has an example of every event handled
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(inst.Installation)) == 3
        assert session.scalar(select(func.count()).select_from(inst.AuthorizationRevocation)) == 1
        assert sorted(session.scalars(select(Account.login))) == ["Codertocat", "octocat"]


def test_an_uninstall_of_an_app_never_seen_installed_makes_no_account(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    deliver(sessions, settings, "installation/deleted.payload.json")
    deliver(sessions, settings, "installation/suspend.payload.json")
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Account)) == 0
        assert session.scalar(select(func.count()).select_from(inst.Installation)) == 2


def test_created_records_installation_account_with_welcome_credits_and_repositories(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    deliver(sessions, settings, "installation/created.payload.json")

    with sessions() as session:
        installation = session.get(inst.Installation, 957387)
        assert installation is not None
        assert (installation.account_id, installation.account_login) == (21031067, "Codertocat")
        assert installation.status == inst.InstallationStatus.ACTIVE
        assert installation.permissions["pull_requests"] == "write"
        [repo] = repos.repositories_of(session, 957387)
        assert (repo.full_name, repo.repository_id, repo.removed_at) == (
            "Codertocat/Hello-World",
            186853002,
            None,
        )
        account = session.get(Account, 21031067)
        assert account is not None and account.login == "Codertocat"
        assert balances.balance(session, 21031067) == settings.welcome_credits
        assert inst.why_unusable(session, 957387, "codertocat/hello-world") is None


def test_replaying_created_changes_nothing_more(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    first = deliver(sessions, settings, "installation/created.payload.json")
    assert apply(sessions, settings, first)
    deliver(sessions, settings, "installation/created.with-requester.payload.json")

    with sessions() as session:
        assert len(repos.repositories_of(session, 957387)) == 1
        assert balances.balance(session, 21031067) == settings.welcome_credits
        assert session.scalar(select(func.count()).select_from(Account)) == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p.pop("installation"), "installation is missing"),
        (lambda p: p["installation"].pop("account"), "installation.account is missing"),
        (lambda p: p["installation"].update(id="x"), "installation.id is missing or not"),
        (lambda p: p.update(repositories=[{"id": 1}]), r"repositories\[0\].full_name"),
        (lambda p: p.update(repositories="all"), "repositories is not a list"),
    ],
)
def test_malformed_installation_event_is_a_permanent_failure(
    sessions: sessionmaker[Session], settings: Settings, change: Any, message: str
) -> None:
    payload = example("installation/created.payload.json")
    change(payload)
    with pytest.raises(PermanentFailure, match=message):
        apply(sessions, settings, context("installation.created", payload))
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(inst.Installation)) == 0


def test_no_onboarding_job_unless_enabled(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    assert settings.onboarding_pr_enabled is False
    deliver(sessions, settings, "installation/created.payload.json")
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(PrJob)) == 0


def test_onboarding_job_once_per_repository_free_on_a_fixed_branch(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    onboarding = settings.model_copy(
        update={"onboarding_pr_enabled": True, "onboarding_pr_path": "renovate.json"}
    )
    created = deliver(sessions, onboarding, "installation/created.payload.json")
    assert apply(sessions, onboarding, created)  # a replay
    deliver(sessions, onboarding, "installation_repositories/added.payload.json")

    with sessions() as session:
        jobs = session.scalars(select(PrJob).order_by(PrJob.id)).all()
        assert [j.repository for j in jobs] == ["Codertocat/Hello-World", "Codertocat/Space"]
        first = jobs[0]
        assert (first.origin, first.status, first.required_credits) == (
            "onboarding",
            JobStatus.PENDING,
            Decimal(0),
        )
        assert first.head_branch == "outbox/onboarding"
        assert first.base_branch == ""  # the repository's default branch
        content = onboarding.onboarding_pr_content
        assert first.files == [{"path": "renovate.json", "content": content}]
        assert first.event_id == created.id
        assert first.key == "onboarding:957387:186853002"
