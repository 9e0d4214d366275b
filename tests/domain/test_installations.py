"""Installations keep their state (active, suspended, deleted), their revocations and the
effects their events wrote; old news never wins."""

from __future__ import annotations

import dataclasses

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from domain import installation_repositories as repos
from domain import installations as inst
from outbox.settings import Settings
from tests.domain.github_support import (
    CREATED_AT,
    about_installation,
    apply,
    context,
    deliver,
    event_ids,
    example,
)


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


def test_revocation_is_recorded_once_per_event(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    event = deliver(sessions, settings, "github_app_authorization/revoked.payload.json")
    assert apply(sessions, settings, event)
    with sessions() as session:
        [row] = session.scalars(select(inst.AuthorizationRevocation)).all()
        assert (row.user_id, row.login, row.event_id) == (1, "octocat", event.id)


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
        dataclasses.replace(suspend, id=next(event_ids)),
        dataclasses.replace(unsuspend, id=next(event_ids)),
    )
    for event in (first, second, first):
        assert apply(sessions, settings, event)
    assert status_of(sessions) == "active"
