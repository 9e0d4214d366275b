"""Handlers for the GitHub App's own events: installations, their repositories, revocations.

Installation events also make the installer's account (welcome grant once) and, when
ONBOARDING_PR_ENABLED, a free onboarding pull-request job for each repository added.

Each handler reads the event's payload into facts (a malformed payload is a PermanentFailure),
then applies them through domain/installations.py, in the transaction that marks the event
done. Applying the same event twice (a replay) changes nothing more.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from domain import account_locks
from domain import installation_repositories as repos
from domain import installations as inst
from domain.account_opening import ensure_account
from domain.job_specs import JobSpec
from domain.jobs import JobOrigin, PrJob, submit
from domain.pull_requests import FileChange
from domain.repository_events import ADDED, REMOVED, RepositoryEvents
from outbox.handling import EventContext, Handler, HandlerTable, PermanentFailure, as_time
from outbox.settings import Settings

#: What an installation event does after its facts were recorded; `news` says whether they
#: were taken (False: older news, or a deleted installation).
Effect = Callable[[Session, EventContext, inst.Installation, bool], None]


def github_handlers(settings: Settings) -> HandlerTable:
    """The GitHub entries of the dispatch table; other GitHub events are skipped."""

    def installation_event(
        name: str, effect: Effect, *, makes_account: bool = True, reinstall: bool = False
    ) -> Handler:
        def apply(session: Session, event: EventContext, _prepared: Any) -> None:
            facts = installation_facts(event.payload)
            if makes_account:
                # The installer is the SaaS account: made (with its welcome grant) once.
                # An uninstall or a suspension of an App we never saw installed makes none.
                ensure_account(
                    session,
                    facts.account_id,
                    login=facts.account_login,
                    kind=facts.account_type,
                    now=event.now,
                    welcome_credits=settings.welcome_credits,
                )
            installation, news = inst.record_installation(
                session, facts, now=event.now, event_id=event.id, reinstall=reinstall
            )
            effect(session, event, installation, news)

        return Handler(name=name, apply=apply, lock_accounts=account_locks.try_lock_accounts)

    def onboard(
        session: Session,
        event: EventContext,
        installation: inst.Installation,
        added: list[repos.InstallationRepository],
    ) -> None:
        if settings.onboarding_pr_enabled and installation.status == inst.InstallationStatus.ACTIVE:
            for repository in added:
                submit_onboarding(session, settings, installation, repository, event)

    def created(
        session: Session, event: EventContext, installation: inst.Installation, news: bool
    ) -> None:
        repos_added(session, event, installation, news, field="repositories")

    def suspend(
        session: Session, event: EventContext, installation: inst.Installation, news: bool
    ) -> None:
        if news:
            inst.mark_suspended(installation, True, now=event.now, event_id=event.id)

    def unsuspend(
        session: Session, event: EventContext, installation: inst.Installation, news: bool
    ) -> None:
        if news:
            inst.mark_suspended(installation, False, now=event.now, event_id=event.id)

    def permissions(
        session: Session, event: EventContext, installation: inst.Installation, news: bool
    ) -> None:
        return None  # record_installation already stored the accepted permissions

    def repos_added(
        session: Session,
        event: EventContext,
        installation: inst.Installation,
        news: bool,
        field: str = "repositories_added",
    ) -> None:
        if installation.status == inst.InstallationStatus.DELETED:
            return  # the App is gone from the account: its repositories with it
        added = repos.add_repositories(
            session,
            installation.id,
            repository_facts(event.payload, field),
            now=event.now,
            event_id=event.id,
        )
        onboard(session, event, installation, added)

    repository_events = RepositoryEvents(
        welcome_credits=settings.welcome_credits,
        read_facts=installation_facts,
        read_repositories=repository_facts,
        onboard=onboard,
    )

    def repository_event(name: str) -> Handler:
        return Handler(
            name=name,
            apply=repository_events.apply,
            apply_many=repository_events.apply_many,
            lock_accounts=account_locks.try_lock_accounts,
        )

    def deleted(session: Session, event: EventContext, _prepared: Any) -> None:
        facts = installation_facts(event.payload)
        inst.record_deletion(session, facts, now=event.now, event_id=event.id)

    def revoked(session: Session, event: EventContext, _prepared: Any) -> None:
        sender = _object(event.payload.get("sender"), "sender")
        inst.record_revocation(
            session,
            user_id=_int_or_none(sender.get("id")),
            login=_text_or_none(sender.get("login")),
            now=event.now,
            event_id=event.id,
        )

    entries = {
        "installation.created": installation_event("record_installation", created, reinstall=True),
        "installation.deleted": Handler(
            name="delete_installation", apply=deleted, lock_accounts=account_locks.try_lock_accounts
        ),
        "installation.suspend": installation_event(
            "suspend_installation", suspend, makes_account=False
        ),
        "installation.unsuspend": installation_event("unsuspend_installation", unsuspend),
        "installation.new_permissions_accepted": installation_event(
            "accept_installation_permissions", permissions
        ),
        # Applied together (domain/repository_events.py), each event type under its name.
        ADDED: repository_event("add_repositories"),
        REMOVED: repository_event("remove_repositories"),
        "github_app_authorization.revoked": Handler(name="record_revocation", apply=revoked),
    }
    return {("github", event_type): handler for event_type, handler in entries.items()}


def submit_onboarding(
    session: Session,
    settings: Settings,
    installation: inst.Installation,
    repository: repos.InstallationRepository,
    event: EventContext,
) -> PrJob:
    """The free configuration pull request for a repository the App was just installed on.

    One per installation and repository (keyed), on one fixed branch, as dependency bots do:
    a repository that saw the onboarding pull request (even closed) does not get a second.
    """
    spec = JobSpec(
        account=str(installation.account_id),
        installation=installation.id,
        repository=repository.full_name,
        base_branch="",  # the repository's default branch, read when the job runs
        title=settings.onboarding_pr_title,
        body=settings.onboarding_pr_body,
        files=(FileChange(settings.onboarding_pr_path, settings.onboarding_pr_content),),
        required_credits=Decimal(0),
        key=f"onboarding:{installation.id}:{repository.repository_id}",
    )
    job, _ = submit(
        session,
        spec,
        now=event.now,
        origin=JobOrigin.ONBOARDING,
        event_id=event.id,
        head_branch=f"{settings.github_branch_prefix}/onboarding",
    )
    return job


# --- reading payloads ------------------------------------------------------------------------


def installation_facts(payload: dict[str, Any]) -> inst.InstallationFacts:
    """The `installation` object of an event; PermanentFailure when it is not usable."""
    installation = _object(payload.get("installation"), "installation")
    account = _object(installation.get("account"), "installation.account")
    permissions = installation.get("permissions")
    return inst.InstallationFacts(
        id=_int(installation.get("id"), "installation.id"),
        account_id=_int(account.get("id"), "installation.account.id"),
        account_login=_text_or_none(account.get("login")),
        account_type=_text_or_none(account.get("type"))
        or _text_or_none(installation.get("target_type")),
        app_id=_int_or_none(installation.get("app_id")),
        repository_selection=_text_or_none(installation.get("repository_selection")),
        permissions=permissions if isinstance(permissions, dict) else {},
        suspended=installation.get("suspended_at") is not None,
        created_at=github_time(installation.get("created_at")),
        updated_at=github_time(installation.get("updated_at")),
    )


def github_time(value: Any) -> datetime | None:
    """A time in a GitHub payload: Unix seconds (older payloads) or ISO 8601; None if neither."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        return parsed.astimezone(UTC) if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    return as_time(value)


def repository_facts(payload: dict[str, Any], field: str) -> list[repos.RepositoryFacts]:
    """The repositories listed in `field` (absent means none)."""
    listed = payload.get(field)
    if listed is None:
        return []
    if not isinstance(listed, list):
        raise PermanentFailure(f"{field} is not a list")
    facts = []
    for n, item in enumerate(listed):
        repo = _object(item, f"{field}[{n}]")
        private = repo.get("private")
        facts.append(
            repos.RepositoryFacts(
                id=_int(repo.get("id"), f"{field}[{n}].id"),
                full_name=_text(repo.get("full_name"), f"{field}[{n}].full_name"),
                private=private if isinstance(private, bool) else None,
            )
        )
    return facts


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PermanentFailure(f"{where} is missing or not an object")
    return value


def _int(value: Any, where: str) -> int:
    number = _int_or_none(value)
    if number is None:
        raise PermanentFailure(f"{where} is missing or not an integer")
    return number


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**63:
        return None
    return value


def _text(value: Any, where: str) -> str:
    text = _text_or_none(value)
    if text is None:
        raise PermanentFailure(f"{where} is missing or not a string")
    return text


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
