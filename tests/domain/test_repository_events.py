"""Repository events applied together (apply_many) write what applying them one by one
writes."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from domain import installation_repositories as repos
from domain import installations as inst
from domain import ledger_tables
from domain.handlers import handler_table
from domain.jobs import PrJob
from outbox.handling import EventContext, Failed, PermanentFailure
from outbox.settings import Settings
from tests.domain.github_support import CREATED_AT, about_installation, apply, context


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
