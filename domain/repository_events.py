"""`installation_repositories.added` and `.removed` events, applied to their installations'
rows in one go.

`RepositoryEvents.apply_many` takes a batch's repository events together: it reads what
each says (a malformed one is a PermanentFailure and writes nothing), opens or updates the
installers' accounts in a few statements (domain/account_opening.py's `ensure_accounts`),
reads every installation they name and all their repository rows in one statement each,
then takes each event's facts in the events' order (domain/installations.py's rules: the
row each one leaves is what the next one sees; the onboarding pull requests of the
repositories an event adds follow it), and writes the lot: the installations read, in
one statement (`write_installations`), the rest with one flush. A single event is the same
call with one item, so one event alone and many together apply the same rules.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from domain import installation_repositories as repos
from domain import installations as inst
from domain.account_opening import Opening, ensure_accounts
from outbox.handling import EventContext, Failed, NoEffect, apply_one

ADDED = "installation_repositories.added"
REMOVED = "installation_repositories.removed"
#: Where each event type lists its repositories, and whether they become reachable.
_LISTS = {ADDED: ("repositories_added", True), REMOVED: ("repositories_removed", False)}

#: What an event's payload says: its installation, and the repositories it lists.
ReadFacts = Callable[[dict[str, Any]], inst.InstallationFacts]
ReadRepositories = Callable[[dict[str, Any], str], list[repos.RepositoryFacts]]
#: The onboarding of repositories just added to an active installation (github_handlers).
Onboard = Callable[
    [Session, EventContext, inst.Installation, list[repos.InstallationRepository]], None
]


@dataclass(frozen=True)
class _Read:
    index: int
    event: EventContext
    facts: inst.InstallationFacts
    repositories: list[repos.RepositoryFacts]
    reachable: bool


@dataclass(frozen=True)
class RepositoryEvents:
    """The set-based apply of repository events, with what it needs from the settings."""

    welcome_credits: Decimal
    read_facts: ReadFacts
    read_repositories: ReadRepositories
    onboard: Onboard

    def apply(self, session: Session, event: EventContext, _prepared: Any) -> NoEffect | None:
        """One repository event: `apply_many` with one item."""
        return apply_one(self.apply_many, session, event, None)

    def apply_many(
        self, session: Session, items: Sequence[tuple[EventContext, Any]]
    ) -> list[Failed | None]:
        """Apply repository events; one result per event, in order: None (applied), or
        why it failed (it wrote nothing)."""
        results: list[Failed | None] = [None] * len(items)
        read: list[_Read] = []
        for index, (event, _) in enumerate(items):
            try:
                read.append(self._read(index, event))
            except Exception as exc:  # PermanentFailure: a malformed event
                results[index] = Failed(exc)
        if not read:
            return results
        read.sort(key=lambda item: item.event.id)  # the events' order
        ensure_accounts(
            session,
            [
                Opening(item.facts.account_id, item.facts.account_login, item.facts.account_type)
                for item in read
            ],
            now=read[0].event.now,
            welcome_credits=self.welcome_credits,
        )
        ids = [item.facts.id for item in read]
        held = inst.installations_by_id(session, ids)
        loaded = list(held.values())
        repositories = repos.repositories_by_installation(session, ids)
        for item in read:
            event = item.event
            installation, _news = inst.take_installation(
                session, held.get(item.facts.id), item.facts, now=event.now, event_id=event.id
            )
            held[installation.id] = installation
            if installation.status == inst.InstallationStatus.DELETED:
                continue  # the App is gone from the account: its repositories with it
            changed = repos.change_repositories(
                session,
                repositories.setdefault(installation.id, {}),
                installation.id,
                item.repositories,
                event.now,
                event.id,
                item.reachable,
            )
            if item.reachable:
                self.onboard(session, event, installation, changed)
        inst.write_installations(session, [row for row in loaded if session.is_modified(row)])
        session.flush()
        return results

    def _read(self, index: int, event: EventContext) -> _Read:
        field, reachable = _LISTS[event.event_type]
        return _Read(
            index=index,
            event=event,
            facts=self.read_facts(event.payload),
            repositories=self.read_repositories(event.payload, field),
            reachable=reachable,
        )
