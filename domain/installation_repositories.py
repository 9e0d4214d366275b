"""The repositories a GitHub App installation can act on: one row per repository an
installation was given, kept when it is removed (with `removed_at`), so a job can say why
it may no longer run there.

From `installation` and `installation_repositories` events. A repository changes only by
an event received after the one that last changed it (a replayed or late event does not
undo newer news), and not once its installation is deleted (domain/installations.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, String, UniqueConstraint, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from outbox.session import Base, BigId, UTCDateTime

NAME_CAP = 255  #: characters kept of a login or a repository's full name


class InstallationRepository(Base):
    """A repository an installation can act on (or could, until `removed_at`)."""

    __tablename__ = "installation_repositories"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    installation_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("installations.id", ondelete="CASCADE"), index=True
    )
    repository_id: Mapped[int] = mapped_column(BigInteger)
    full_name: Mapped[str] = mapped_column(String(NAME_CAP))
    private: Mapped[bool | None] = mapped_column(Boolean)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime)
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    event_id: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (
        UniqueConstraint(
            "installation_id", "repository_id", name="uq_installation_repositories_repo"
        ),
    )


@dataclass(frozen=True)
class RepositoryFacts:
    id: int
    full_name: str
    private: bool | None


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
    changed = change_repositories(
        session, existing, installation_id, repositories, now, event_id, reachable
    )
    session.flush()
    return changed


def change_repositories(
    session: Session,
    existing: dict[int, InstallationRepository],
    installation_id: int,
    repositories: Iterable[RepositoryFacts],
    now: datetime,
    event_id: int | None,
    reachable: bool,
) -> list[InstallationRepository]:
    """Add (`reachable`) or remove repositories of an installation whose rows were already
    read (`existing`, by repository id, kept up to date); unflushed. Returns the rows changed."""
    changed: list[InstallationRepository] = []
    for repo in repositories:
        row = existing.get(repo.id)
        if row is not None and _received_before(event_id, row.event_id):
            continue  # a replayed or late event: the repository has newer news
        if row is None:
            row = InstallationRepository(
                installation_id=installation_id, repository_id=repo.id, added_at=now
            )
            session.add(row)
            existing[repo.id] = row
        elif (row.removed_at is None) == reachable:
            continue  # already so (a replay, or a list that repeats what we know)
        row.full_name = capped(repo.full_name) or ""
        row.private = repo.private
        if reachable:
            row.added_at = now
        row.removed_at = None if reachable else now
        row.event_id = event_id
        changed.append(row)
    return changed


def _received_before(event_id: int | None, held: int | None) -> bool:
    return event_id is not None and held is not None and event_id < held


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


def repositories_of(session: Session, installation_id: int) -> Sequence[InstallationRepository]:
    return session.scalars(
        select(InstallationRepository)
        .where(InstallationRepository.installation_id == installation_id)
        .order_by(InstallationRepository.full_name)
    ).all()


def repositories_by_installation(
    session: Session, installation_ids: Iterable[int]
) -> dict[int, dict[int, InstallationRepository]]:
    """Each installation's repository rows by repository id, read in one statement."""
    wanted = sorted(set(installation_ids))
    found: dict[int, dict[int, InstallationRepository]] = {i: {} for i in wanted}
    if not wanted:
        return found
    rows = session.scalars(
        select(InstallationRepository).where(InstallationRepository.installation_id.in_(wanted))
    )
    for row in rows:
        found[row.installation_id][row.repository_id] = row
    return found


def _repositories_by_id(
    session: Session, installation_id: int
) -> dict[int, InstallationRepository]:
    return {row.repository_id: row for row in repositories_of(session, installation_id)}


def capped(text: str | None, cap: int = NAME_CAP) -> str | None:
    return text[:cap] if text else None
