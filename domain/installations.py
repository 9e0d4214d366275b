"""GitHub App installations: who installed the App, and in what state; and the users who
revoked their authorization of it.

Kept from `installation`, `installation_repositories` and `github_app_authorization` events.
An installation is `active`, `suspended` or `deleted`; the repositories it was given are
domain/installation_repositories.py's.

Old news never wins here either: GitHub delivers out of order, redelivers, and operators
replay. An event changes an installation's status and description only when it is news:
its installation's `updated_at` (GitHub's time) is later than the one the row was last set
from, or the same (or absent) and the event was received later (its row id). `deleted` is
final: a deletion applies whatever the order (unless it is of an earlier installation
under the same id), and after it nothing changes the installation but an
`installation.created` of a new one, whose `created_at` is later than everything known of
the deleted one (a replayed or late `created` of the old one is not).
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
    String,
    Table,
    select,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from domain.installation_repositories import (
    NAME_CAP,
    InstallationRepository,
    capped,
    find_repository,
    repositories_of,
)
from outbox.session import Base, BigId, UTCDateTime, write_over


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
    account_login: Mapped[str | None] = mapped_column(String(NAME_CAP))
    account_type: Mapped[str | None] = mapped_column(String(32))
    app_id: Mapped[int | None] = mapped_column(BigInteger)
    repository_selection: Mapped[str | None] = mapped_column(String(16))
    permissions: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16))
    suspended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: GitHub's `created_at` and `updated_at` of the installation, as last taken from an event.
    github_created_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    github_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The webhook event that last changed this row.
    event_id: Mapped[int | None] = mapped_column(BigInteger)


class AuthorizationRevocation(Base):
    """A user revoked their authorization of the App (`github_app_authorization.revoked`)."""

    __tablename__ = "github_authorization_revocations"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    login: Mapped[str | None] = mapped_column(String(NAME_CAP))
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
    #: GitHub's times of the installation, when the payload has them.
    created_at: datetime | None = None
    updated_at: datetime | None = None


# --- operations ------------------------------------------------------------------------------


def record_installation(
    session: Session,
    facts: InstallationFacts,
    *,
    now: datetime,
    event_id: int | None,
    reinstall: bool = False,
) -> tuple[Installation, bool]:
    """Create an installation, or bring it up to date from an event's facts when they are
    news (see the module doc); True when the facts were taken.

    Any event about an installation carries its full description, so an installation made
    before this service existed is recorded by the first event that names it. A deleted
    installation is taken back only with `reinstall` (an `installation.created`) and facts
    of a new installation.
    """
    held = session.get(Installation, facts.id)
    return take_installation(session, held, facts, now=now, event_id=event_id, reinstall=reinstall)


def take_installation(
    session: Session,
    held: Installation | None,
    facts: InstallationFacts,
    *,
    now: datetime,
    event_id: int | None,
    reinstall: bool = False,
) -> tuple[Installation, bool]:
    """`record_installation` on the row already read (`held`; None: there is none yet)."""
    installation = held
    if installation is None:
        installation = Installation(id=facts.id, created_at=now)
        _take_facts(installation, facts, now=now, event_id=event_id)
        session.add(installation)
        # Written at once: the rows of its repositories, added next, refer to it, and the
        # ORM orders the inserts of two classes that no relationship links by name alone.
        session.flush([installation])
        return installation, True
    if installation.status == InstallationStatus.DELETED:
        if not (reinstall and _is_new_installation(installation, facts)):
            return installation, False
        _reinstate(session, installation, now)
    elif not _is_news(installation, facts, event_id):
        return installation, False
    _take_facts(installation, facts, now=now, event_id=event_id)
    return installation, True


def record_deletion(
    session: Session, facts: InstallationFacts, *, now: datetime, event_id: int | None
) -> Installation:
    """`installation.deleted`: final, whatever the order it arrives in, unless it is the
    deletion of an earlier installation under the same id (one created before this one)."""
    installation = session.get(Installation, facts.id)
    if installation is None:
        installation, _ = record_installation(session, facts, now=now, event_id=event_id)
    elif _created_before(facts, installation):
        return installation
    installation.github_updated_at = _later(installation.github_updated_at, facts.updated_at)
    mark_deleted(installation, now=now, event_id=event_id)
    return installation


def mark_deleted(installation: Installation, *, now: datetime, event_id: int | None) -> None:
    installation.status = InstallationStatus.DELETED
    installation.deleted_at = installation.deleted_at or now
    installation.updated_at = now
    installation.event_id = event_id


def _is_news(installation: Installation, facts: InstallationFacts, event_id: int | None) -> bool:
    """Whether an event about a live installation is not older than what it was last set from."""
    held = installation.github_updated_at
    if facts.updated_at is not None and held is not None and facts.updated_at != held:
        return facts.updated_at > held
    return event_id is None or installation.event_id is None or event_id >= installation.event_id


def _is_new_installation(deleted: Installation, facts: InstallationFacts) -> bool:
    """Whether `facts` are of an installation created after everything known of `deleted`."""
    known = [t for t in (deleted.github_created_at, deleted.github_updated_at) if t is not None]
    return facts.created_at is not None and bool(known) and facts.created_at > max(known)


def _created_before(facts: InstallationFacts, installation: Installation) -> bool:
    held = installation.github_created_at
    return facts.created_at is not None and held is not None and facts.created_at < held


def _later(held: datetime | None, new: datetime | None) -> datetime | None:
    return new if held is None or (new is not None and new > held) else held


def _reinstate(session: Session, installation: Installation, now: datetime) -> None:
    """A new installation under a deleted one's id: it starts afresh, with none of the old
    one's repositories (its `created` event lists its own)."""
    installation.deleted_at = None
    installation.suspended_at = None
    for repository in repositories_of(session, installation.id):
        if repository.removed_at is None:
            repository.removed_at = now


def _take_facts(
    installation: Installation, facts: InstallationFacts, *, now: datetime, event_id: int | None
) -> None:
    installation.account_id = facts.account_id
    installation.account_login = capped(facts.account_login)
    installation.account_type = capped(facts.account_type, 32)
    installation.app_id = facts.app_id
    installation.repository_selection = capped(facts.repository_selection, 16)
    installation.permissions = facts.permissions
    if facts.suspended:
        installation.status = InstallationStatus.SUSPENDED
        installation.suspended_at = installation.suspended_at or now
    else:
        installation.status = InstallationStatus.ACTIVE
        installation.suspended_at = None
    installation.github_created_at = facts.created_at or installation.github_created_at
    installation.github_updated_at = _later(installation.github_updated_at, facts.updated_at)
    installation.updated_at = now
    installation.event_id = event_id


def mark_suspended(
    installation: Installation, suspended: bool, *, now: datetime, event_id: int | None
) -> None:
    """`installation.suspend` / `unsuspend` whose facts were news (record_installation)."""
    if installation.status == InstallationStatus.DELETED:
        return  # a late suspend/unsuspend never brings a deleted installation back
    installation.status = InstallationStatus.SUSPENDED if suspended else InstallationStatus.ACTIVE
    installation.suspended_at = (installation.suspended_at or now) if suspended else None
    installation.updated_at = now
    installation.event_id = event_id


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
        user_id=user_id, login=capped(login), revoked_at=now, event_id=event_id
    )
    session.add(row)
    return row


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


def installations_by_id(session: Session, ids: Iterable[int]) -> dict[int, Installation]:
    """The installations of these ids that exist, read in one statement."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    rows = session.scalars(select(Installation).where(Installation.id.in_(wanted)))
    return {row.id: row for row in rows}


def write_installations(session: Session, rows: Sequence[Installation]) -> None:
    """Write installations read and changed in memory over their rows, in one statement
    (outbox/session.py's `write_over`), and take them out of the session."""
    write_over(session, _installations, rows)


_installations: Table = Installation.__table__  # type: ignore[assignment]
