"""Installation events keep installations, their accounts and repositories; every example fits."""

from __future__ import annotations

import dataclasses
import itertools
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from domain import balances, ledger_tables
from domain import installation_repositories as repos
from domain import installations as inst
from domain.accounts import Account
from domain.handlers import handler_table
from domain.jobs import JobStatus, PrJob
from outbox.handling import EventContext, Failed, PermanentFailure
from outbox.settings import Settings
from tests.conftest import CORPUS

GITHUB_CORPUS = CORPUS / "github"
NOW = datetime(2026, 12, 1, 21, 0, tzinfo=UTC)
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
_event_ids = itertools.count(1)


def example(relative: str) -> dict[str, Any]:
    return json.loads((GITHUB_CORPUS / relative).read_text())  # type: ignore[no-any-return]


def event_type_of(path: Path, payload: dict[str, Any]) -> str:
    action = payload.get("action")
    return f"{path.parent.name}.{action}" if isinstance(action, str) else path.parent.name


def context(
    event_type: str, payload: dict[str, Any], *, now: datetime = NOW, event_id: int | None = None
) -> EventContext:
    return EventContext(
        id=event_id or next(_event_ids),
        source="github",
        delivery_id=f"delivery-{event_id}",
        event_type=event_type,
        payload=payload,
        livemode=None,
        provider_created_at=None,
        installation_id=None,
        stripe_account=None,
        account_id=None,
        attempts=1,
        backfilled=False,
        now=now,
    )


def apply(
    sessions: sessionmaker[Session], settings: Settings, event: EventContext
) -> bool:  # fmt: skip
    """Apply one event as the processors would (False: no handler, it would be skipped)."""
    handler = handler_table(settings).get(("github", event.event_type))
    if handler is None:
        return False
    with sessions() as session, session.begin():
        handler.apply(session, event, None)
    return True


def deliver(
    sessions: sessionmaker[Session], settings: Settings, relative: str, **kwargs: Any
) -> EventContext:
    payload = example(relative)
    event = context(event_type_of(GITHUB_CORPUS / relative, payload), payload, **kwargs)
    assert apply(sessions, settings, event)
    return event


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


def test_suspend_then_unsuspend(sessions: sessionmaker[Session], settings: Settings) -> None:
    deliver(sessions, settings, "installation/suspend.payload.json")
    with sessions() as session:
        installation = session.get(inst.Installation, 16598467)
        assert installation is not None
        assert installation.status == inst.InstallationStatus.SUSPENDED
        assert installation.suspended_at is not None

    deliver(sessions, settings, "installation/unsuspend.payload.json")
    with sessions() as session:
        installation = session.get(inst.Installation, 16598467)
        assert installation is not None
        assert (installation.status, installation.suspended_at) == ("active", None)


def test_deleted_installation_stays_deleted_and_refuses_work(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    deliver(sessions, settings, "installation/created.payload.json")
    deleted = example("installation/deleted.payload.json")
    deleted["installation"] = example("installation/created.payload.json")["installation"]
    assert apply(sessions, settings, context("installation.deleted", deleted))
    unsuspend = example("installation/unsuspend.payload.json")
    unsuspend["installation"]["id"] = 957387
    assert apply(sessions, settings, context("installation.unsuspend", unsuspend))

    with sessions() as session:
        installation = session.get(inst.Installation, 957387)
        assert installation is not None and installation.status == "deleted"
        reason = inst.why_unusable(session, 957387, "Codertocat/Hello-World")
        assert reason == "installation 957387 was removed (the App was uninstalled)"


def test_repositories_added_and_removed(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    deliver(sessions, settings, "installation_repositories/added.payload.json")
    deliver(sessions, settings, "installation_repositories/removed.payload.json")

    with sessions() as session:
        assert inst.why_unusable(session, 957387, "Codertocat/Space") is None
        assert inst.why_unusable(session, 2, "octocat/Hello-World") == (
            "repository octocat/Hello-World was removed from installation 2"
        )
        assert inst.why_unusable(session, 957387, "Codertocat/Other") == (
            "repository Codertocat/Other is not part of installation 957387"
        )
        assert inst.why_unusable(session, 5, "a/b") == (
            "installation 5 is unknown (no installation event received)"
        )


def test_a_removed_repository_added_again_is_usable(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    added = example("installation_repositories/added.payload.json")
    removed = dict(added, action="removed", repositories_removed=added["repositories_added"])
    removed["repositories_added"] = []
    for n, (kind, payload) in enumerate([("added", added), ("removed", removed), ("added", added)]):
        event = context(f"installation_repositories.{kind}", payload, now=NOW + timedelta(n))
        assert apply(sessions, settings, event)
    with sessions() as session:
        assert inst.why_unusable(session, 957387, "Codertocat/Space") is None


def test_revocation_is_recorded_once_per_event(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    event = deliver(sessions, settings, "github_app_authorization/revoked.payload.json")
    assert apply(sessions, settings, event)
    with sessions() as session:
        [row] = session.scalars(select(inst.AuthorizationRevocation)).all()
        assert (row.user_id, row.login, row.event_id) == (1, "octocat", event.id)


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


def test_effects_of_an_installation_event_list_its_rows(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    from domain import jobs, usage

    onboarding = settings.model_copy(update={"onboarding_pr_enabled": True})
    event = deliver(sessions, onboarding, "installation/created.payload.json")
    other = deliver(sessions, onboarding, "installation/suspend.payload.json")

    with sessions() as session:
        found = (
            inst.effects_of_event(session, event.id)
            + jobs.effects_of_event(session, event.id)
            + usage.effects_of_event(session, event.id)
        )
        assert [(e["table"], e["id"]) for e in found] == [
            ("installations", 957387),
            ("installation_repositories", 1),
            ("pr_jobs", 1),
        ]
        assert [e["table"] for e in inst.effects_of_event(session, other.id)] == ["installations"]
        assert jobs.effects_of_event(session, other.id) == []


# --- old news never wins ---------------------------------------------------------------------

CREATED_AT = 1557933591  #: seconds; the corpus installation's created_at


def about_installation(
    relative: str, *, created: int = CREATED_AT, updated: int = CREATED_AT, **changes: Any
) -> dict[str, Any]:
    """A corpus payload about the corpus's installation 957387, with GitHub's times set."""
    payload = example(relative)
    installation = example("installation/created.payload.json")["installation"]
    payload["installation"] = {
        **installation, "created_at": created, "updated_at": updated, **changes
    }  # fmt: skip
    return payload


def status_of(sessions: sessionmaker[Session], installation_id: int = 957387) -> str:
    with sessions() as session:
        installation = session.get(inst.Installation, installation_id)
        assert installation is not None
        return installation.status


def repositories(sessions: sessionmaker[Session]) -> dict[str, bool]:
    """Full name -> reachable, of installation 957387's repositories."""
    with sessions() as session:
        rows = repos.repositories_of(session, 957387)
        return {row.full_name: row.removed_at is None for row in rows}


def test_a_replayed_or_late_created_does_not_revive_a_deleted_installation(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    created = context(
        "installation.created", about_installation("installation/created.payload.json")
    )
    deleted = context(
        "installation.deleted",
        about_installation("installation/deleted.payload.json", updated=CREATED_AT + 60),
    )
    for event in (created, deleted, created):  # an operator replays the old `created`
        assert apply(sessions, settings, event)
    assert status_of(sessions) == "deleted"
    late = context("installation.created", about_installation("installation/created.payload.json"))
    assert apply(sessions, settings, late)  # the same `created`, delivered again late
    assert status_of(sessions) == "deleted"
    with sessions() as session:
        assert inst.why_unusable(session, 957387, "Codertocat/Hello-World") == (
            "installation 957387 was removed (the App was uninstalled)"
        )


def test_a_deletion_delivered_before_its_creation_stays_a_deletion(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    deleted = about_installation("installation/deleted.payload.json", updated=CREATED_AT + 60)
    assert apply(sessions, settings, context("installation.deleted", deleted))
    created = about_installation("installation/created.payload.json")
    assert apply(sessions, settings, context("installation.created", created))
    assert status_of(sessions) == "deleted"


def test_late_repository_changes_leave_a_deleted_installation_and_its_repositories_alone(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    created = about_installation("installation/created.payload.json")
    assert apply(sessions, settings, context("installation.created", created))
    deleted = about_installation("installation/deleted.payload.json", updated=CREATED_AT + 60)
    assert apply(sessions, settings, context("installation.deleted", deleted))
    before = repositories(sessions)
    added = about_installation("installation_repositories/added.payload.json")
    removed = about_installation("installation_repositories/removed.payload.json")
    removed["repositories_removed"] = created["repositories"]
    for kind, payload in (("added", added), ("removed", removed)):
        assert apply(sessions, settings, context(f"installation_repositories.{kind}", payload))
    assert status_of(sessions) == "deleted"
    assert repositories(sessions) == before


def test_a_new_installation_under_a_deleted_ones_id_is_active_with_its_own_repositories(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    old = about_installation("installation/created.payload.json")
    assert apply(sessions, settings, context("installation.created", old))
    deleted = about_installation("installation/deleted.payload.json", updated=CREATED_AT + 60)
    assert apply(sessions, settings, context("installation.deleted", deleted))
    new = about_installation(
        "installation/created.payload.json", created=CREATED_AT + 120, updated=CREATED_AT + 120
    )
    new["repositories"] = [{"id": 7, "full_name": "Codertocat/New", "private": False}]
    assert apply(sessions, settings, context("installation.created", new))
    assert status_of(sessions) == "active"
    assert repositories(sessions) == {"Codertocat/Hello-World": False, "Codertocat/New": True}
    # The old installation's deletion, delivered again, is not about this one.
    assert apply(sessions, settings, context("installation.deleted", deleted))
    assert status_of(sessions) == "active"


def test_a_late_or_replayed_suspend_does_not_undo_a_newer_unsuspend(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    suspended_at = "2019-05-15T15:30:00Z"
    suspend = context(
        "installation.suspend",
        about_installation(
            "installation/suspend.payload.json",
            updated="2019-05-15T15:30:00Z",
            suspended_at=suspended_at,
        ),
    )
    unsuspend = context(
        "installation.unsuspend",
        about_installation("installation/unsuspend.payload.json", updated="2019-05-15T16:00:00Z"),
    )
    for event in (unsuspend, suspend):  # delivered out of order
        assert apply(sessions, settings, event)
    assert status_of(sessions) == "active"

    # Without times, the order they were received in decides: a replay is old news.
    for payload in (suspend.payload, unsuspend.payload):
        for key in ("created_at", "updated_at"):
            payload["installation"].pop(key)
    first, second = (
        dataclasses.replace(suspend, id=next(_event_ids)),
        dataclasses.replace(unsuspend, id=next(_event_ids)),
    )
    for event in (first, second, first):
        assert apply(sessions, settings, event)
    assert status_of(sessions) == "active"


# --- repository events applied together --------------------------------------------------------


def _repository_events() -> list[EventContext]:
    """A batch's repository events: three on one installation (added, removed, added again,
    its installer renamed in between), one of an installation already deleted, one opening
    a new account, and a malformed one."""
    added = about_installation("installation_repositories/added.payload.json")
    removed = dict(added, action="removed", repositories_removed=added["repositories_added"])
    removed["repositories_added"] = []
    renamed = about_installation(
        "installation_repositories/added.payload.json", updated=CREATED_AT + 5
    )
    renamed["installation"]["account"] = {**renamed["installation"]["account"], "login": "Renamed"}
    elsewhere = about_installation("installation_repositories/added.payload.json", id=7001)
    elsewhere["installation"]["account"] = {"id": 4242, "login": "newcomer", "type": "User"}
    elsewhere["repositories_added"] = [
        {"id": 501, "full_name": "newcomer/one", "private": True},
        {"id": 502, "full_name": "newcomer/two", "private": False},
    ]
    gone = about_installation("installation_repositories/added.payload.json", id=7002)
    malformed = dict(added, installation=None)
    listed = [
        ("added", added),
        ("added", elsewhere),
        ("removed", removed),
        ("added", gone),
        ("added", malformed),
        ("added", renamed),
    ]
    return [
        context(f"installation_repositories.{kind}", payload, event_id=900 + n)
        for n, (kind, payload) in enumerate(listed)
    ]


def _world(sessions: sessionmaker[Session]) -> dict[str, Any]:
    """Everything the events may have written, without generated row ids."""
    from domain.accounts import Account as AccountRow

    with sessions() as s:
        return {
            "accounts": s.execute(
                select(AccountRow.id, AccountRow.login, AccountRow.kind).order_by(AccountRow.id)
            ).all(),
            "installations": [
                (i.id, i.account_id, i.account_login, i.status, i.event_id, i.github_updated_at)
                for i in s.scalars(select(inst.Installation).order_by(inst.Installation.id))
            ],
            "repositories": [
                (
                    r.installation_id,
                    r.repository_id,
                    r.full_name,
                    r.private,
                    r.removed_at,
                    r.event_id,
                )
                for r in s.scalars(
                    select(repos.InstallationRepository).order_by(
                        repos.InstallationRepository.installation_id,
                        repos.InstallationRepository.repository_id,
                    )
                )
            ],
            "ledger": s.execute(
                select(
                    ledger_tables.CreditEntry.key,
                    ledger_tables.CreditEntry.account_id,
                    ledger_tables.CreditEntry.amount,
                    ledger_tables.CreditEntry.debt_change,
                    ledger_tables.CreditEntry.reason,
                ).order_by(ledger_tables.CreditEntry.key)
            ).all(),
            "jobs": s.execute(
                select(PrJob.key, PrJob.repository, PrJob.event_id).order_by(PrJob.key)
            ).all(),
        }


def _start_afresh(sessions: sessionmaker[Session], settings: Settings) -> None:
    """No rows at all, then the installation that is deleted before the batch."""
    from outbox.db import Base

    with sessions() as s, s.begin():
        for table in reversed(Base.metadata.sorted_tables):
            s.execute(table.delete())
    gone = about_installation("installation/deleted.payload.json", id=7002)
    assert apply(sessions, settings, context("installation.deleted", gone, event_id=800))


def test_repository_events_applied_together_end_as_applied_one_by_one(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    """One apply_many over a batch's repository events writes what applying them one after
    the other writes (accounts and their welcome grants, installations, repositories,
    onboarding jobs); the malformed one fails alone and writes nothing."""
    onboarding = settings.model_copy(update={"onboarding_pr_enabled": True})
    handler = handler_table(onboarding)[("github", "installation_repositories.added")]
    assert handler.apply_many is not None
    events = _repository_events()

    _start_afresh(sessions, onboarding)
    failed = []
    for event in events:
        try:
            apply(sessions, onboarding, event)
        except PermanentFailure:
            failed.append(event.id)
    assert failed == [904]
    one_by_one = _world(sessions)

    _start_afresh(sessions, onboarding)
    with sessions() as s, s.begin():
        results = handler.apply_many(s, [(event, None) for event in events])
    assert results[:4] == [None] * 4 and results[5] is None
    assert isinstance(results[4], Failed) and isinstance(results[4].error, PermanentFailure)
    together = _world(sessions)

    assert together == one_by_one
    assert ("Renamed" in str(together["accounts"])) and len(together["jobs"]) == 3
    assert [r[1:3] for r in together["repositories"] if r[0] == 7002] == []
