"""GitHub App installations: who installed the App, on which repositories, and in what state.

Kept from `installation`, `installation_repositories` and `github_app_authorization` events.
An installation is `active`, `suspended` or `deleted`; a repository row is kept when it is
removed (with `removed_at`), so a job can say why it may no longer run there.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    String,
    UniqueConstraint,
    func,
    select,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from outbox.db import Base, UTCDateTime
from outbox.models import BigId

_NAME_CAP = 255  #: characters kept of a login or a repository's full name


class InstallationStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    DELETED = "deleted"


class Installation(Base):
    """One installation of the App on a user's or an organisation's account."""

    __tablename__ = "installations"

    #: GitHub's installation id.
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    #: The GitHub user or organisation that installed the App (the SaaS account's id).
    account_id: Mapped[int] = mapped_column(BigInteger, index=True)
    account_login: Mapped[str | None] = mapped_column(String(_NAME_CAP))
    account_type: Mapped[str | None] = mapped_column(String(32))
    app_id: Mapped[int | None] = mapped_column(BigInteger)
    repository_selection: Mapped[str | None] = mapped_column(String(16))
    permissions: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16))
    suspended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: The webhook event that last changed this row.
    event_id: Mapped[int | None] = mapped_column(BigInteger)


class InstallationRepository(Base):
    """A repository an installation can act on (or could, until `removed_at`)."""

    __tablename__ = "installation_repositories"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    installation_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("installations.id", ondelete="CASCADE"), index=True
    )
    repository_id: Mapped[int] = mapped_column(BigInteger)
    full_name: Mapped[str] = mapped_column(String(_NAME_CAP))
    private: Mapped[bool | None] = mapped_column(Boolean)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime)
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    event_id: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (
        UniqueConstraint(
            "installation_id", "repository_id", name="uq_installation_repositories_repo"
        ),
    )


class AuthorizationRevocation(Base):
    """A user revoked their authorization of the App (`github_app_authorization.revoked`)."""

    __tablename__ = "github_authorization_revocations"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    login: Mapped[str | None] = mapped_column(String(_NAME_CAP))
    revoked_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: One revocation per event: applying the same event again records nothing new.
    event_id: Mapped[int | None] = mapped_column(BigInteger, unique=True)


# --- what the events say ---------------------------------------------------------------------


@dataclass(frozen=True)
class InstallationFacts:
    """What an event's `installation` object says about the installation."""

    id: int
    account_id: int
    account_login: str | None
    account_type: str | None
    app_id: int | None
    repository_selection: str | None
    permissions: dict[str, Any]
    suspended: bool


@dataclass(frozen=True)
class RepositoryFacts:
    id: int
    full_name: str
    private: bool | None


# --- operations ------------------------------------------------------------------------------


def record_installation(
    session: Session, facts: InstallationFacts, *, now: datetime, event_id: int | None
) -> tuple[Installation, bool]:
    """Create or refresh an installation from what an event says; True when it is new.

    Any event about an installation carries its full description, so an installation made
    before this service existed is recorded by the first event that names it.
    """
    installation = session.get(Installation, facts.id)
    created = installation is None
    if installation is None:
        installation = Installation(id=facts.id, created_at=now)
        session.add(installation)
    installation.account_id = facts.account_id
    installation.account_login = _cap(facts.account_login)
    installation.account_type = _cap(facts.account_type, 32)
    installation.app_id = facts.app_id
    installation.repository_selection = _cap(facts.repository_selection, 16)
    installation.permissions = facts.permissions
    if installation.status != InstallationStatus.DELETED or created:
        if facts.suspended:
            installation.status = InstallationStatus.SUSPENDED
            installation.suspended_at = installation.suspended_at or now
        else:
            installation.status = InstallationStatus.ACTIVE
            installation.suspended_at = None
    installation.updated_at = now
    installation.event_id = event_id
    return installation, created


def reinstate(installation: Installation, *, now: datetime, event_id: int | None) -> None:
    """`installation.created` for an id seen deleted: GitHub made it live again."""
    installation.status = InstallationStatus.ACTIVE
    installation.deleted_at = None
    installation.suspended_at = None
    installation.updated_at = now
    installation.event_id = event_id


def mark_deleted(installation: Installation, *, now: datetime, event_id: int | None) -> None:
    installation.status = InstallationStatus.DELETED
    installation.deleted_at = installation.deleted_at or now
    installation.updated_at = now
    installation.event_id = event_id


def mark_suspended(
    installation: Installation, suspended: bool, *, now: datetime, event_id: int | None
) -> None:
    if installation.status == InstallationStatus.DELETED:
        return  # a late suspend/unsuspend never brings a deleted installation back
    installation.status = InstallationStatus.SUSPENDED if suspended else InstallationStatus.ACTIVE
    installation.suspended_at = (installation.suspended_at or now) if suspended else None
    installation.updated_at = now
    installation.event_id = event_id


def add_repositories(
    session: Session,
    installation_id: int,
    repositories: Iterable[RepositoryFacts],
    *,
    now: datetime,
    event_id: int | None,
) -> list[InstallationRepository]:
    """Record repositories as reachable; returns those that were not already (new or re-added)."""
    return _change_repositories(session, installation_id, repositories, now, event_id, True)


def remove_repositories(
    session: Session,
    installation_id: int,
    repositories: Iterable[RepositoryFacts],
    *,
    now: datetime,
    event_id: int | None,
) -> list[InstallationRepository]:
    """Record repositories as no longer reachable; returns those that were reachable.

    A repository removed before we ever saw it added is kept too, so a job naming it is
    refused with the reason.
    """
    return _change_repositories(session, installation_id, repositories, now, event_id, False)


def _change_repositories(
    session: Session,
    installation_id: int,
    repositories: Iterable[RepositoryFacts],
    now: datetime,
    event_id: int | None,
    reachable: bool,
) -> list[InstallationRepository]:
    existing = _repositories_by_id(session, installation_id)
    changed: list[InstallationRepository] = []
    for repo in repositories:
        row = existing.get(repo.id)
        if row is None:
            row = InstallationRepository(
                installation_id=installation_id, repository_id=repo.id, added_at=now
            )
            session.add(row)
            existing[repo.id] = row
        elif (row.removed_at is None) == reachable:
            continue  # already so (a replay, or a list that repeats what we know)
        row.full_name = _cap(repo.full_name) or ""
        row.private = repo.private
        if reachable:
            row.added_at = now
        row.removed_at = None if reachable else now
        row.event_id = event_id
        changed.append(row)
    session.flush()
    return changed


def record_revocation(
    session: Session,
    *,
    user_id: int | None,
    login: str | None,
    now: datetime,
    event_id: int | None,
) -> AuthorizationRevocation | None:
    """Record a revoked user authorization once per event; None when already recorded."""
    if event_id is not None:
        found = session.scalar(
            select(AuthorizationRevocation).where(AuthorizationRevocation.event_id == event_id)
        )
        if found is not None:
            return None
    row = AuthorizationRevocation(
        user_id=user_id, login=_cap(login), revoked_at=now, event_id=event_id
    )
    session.add(row)
    return row


def find_repository(
    session: Session, installation_id: int, full_name: str
) -> InstallationRepository | None:
    """The installation's row for a repository, by full name (GitHub's names ignore case)."""
    return session.scalar(
        select(InstallationRepository)
        .where(
            InstallationRepository.installation_id == installation_id,
            func.lower(InstallationRepository.full_name) == full_name.lower(),
        )
        .order_by(InstallationRepository.removed_at.is_not(None), InstallationRepository.id)
        .limit(1)
    )


def why_unusable(session: Session, installation_id: int, full_name: str) -> str | None:
    """Why the App may not act on `full_name` through this installation now; None if it may."""
    installation = session.get(Installation, installation_id)
    if installation is None:
        return f"installation {installation_id} is unknown (no installation event received)"
    if installation.status == InstallationStatus.DELETED:
        return f"installation {installation_id} was removed (the App was uninstalled)"
    if installation.status == InstallationStatus.SUSPENDED:
        return f"installation {installation_id} is suspended"
    repo = find_repository(session, installation_id, full_name)
    if repo is None:
        return f"repository {full_name} is not part of installation {installation_id}"
    if repo.removed_at is not None:
        return f"repository {full_name} was removed from installation {installation_id}"
    return None


def repositories_of(session: Session, installation_id: int) -> Sequence[InstallationRepository]:
    return session.scalars(
        select(InstallationRepository)
        .where(InstallationRepository.installation_id == installation_id)
        .order_by(InstallationRepository.full_name)
    ).all()


def effects_of_event(session: Session, event_id: int) -> list[dict[str, object]]:
    """What a webhook event last changed here (for `outbox events show`)."""
    found: list[dict[str, object]] = []
    for row in session.scalars(select(Installation).where(Installation.event_id == event_id)):
        found.append(
            {
                "table": "installations",
                "id": row.id,
                "account_id": row.account_id,
                "status": row.status,
            }
        )
    repositories = select(InstallationRepository).where(InstallationRepository.event_id == event_id)
    for repo in session.scalars(repositories.order_by(InstallationRepository.id)):
        found.append(
            {
                "table": "installation_repositories",
                "id": repo.id,
                "installation_id": repo.installation_id,
                "full_name": repo.full_name,
                "removed": repo.removed_at is not None,
            }
        )
    revocations = select(AuthorizationRevocation).where(
        AuthorizationRevocation.event_id == event_id
    )
    for revoked in session.scalars(revocations):
        found.append(
            {
                "table": "github_authorization_revocations",
                "id": revoked.id,
                "user_id": revoked.user_id,
                "login": revoked.login,
            }
        )
    return found


def _repositories_by_id(
    session: Session, installation_id: int
) -> dict[int, InstallationRepository]:
    return {row.repository_id: row for row in repositories_of(session, installation_id)}


def _cap(text: str | None, cap: int = _NAME_CAP) -> str | None:
    return text[:cap] if text else None
