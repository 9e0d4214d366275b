"""An installation's repositories: added, removed, added again, and why one is unusable."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from domain import installations as inst
from outbox.settings import Settings
from tests.domain.github_support import NOW, apply, context, deliver, example


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
