"""A comment `/outbox pr <title>` on an issue becomes a paid pull-request job.

An example of the deploying SaaS's own handler (the service's docs/handlers.md is the
contract): it reads a GitHub `issue_comment.created`, and, in the transaction that marks
the event done, submits a job for the installation's account through the service's own
`domain.jobs.submit`. The service then works the job as any other: validation reserves
its credits, a worker opens the pull request, success takes the credits once and writes
one usage record for the Stripe meter.

The comment is untrusted: anyone can comment on a public repository, so only the
repository's owner, members and collaborators may ask, and the title is one line of
1 to MAX_TITLE characters with no control character. A comment that is not such a command
changes nothing (`NoEffect`, its reason on the event's `done` row).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from domain.installations import Installation, InstallationStatus
from domain.job_specs import InvalidJobSpec, parse_spec
from domain.jobs import JobRejected, submit
from outbox.handling import EventContext, Handler, NoEffect, PermanentFailure, RetryLater
from outbox.registry import Registry
from outbox.settings import Settings

COMMAND = "/outbox pr"  #: the first line of the comment starts with it, then the title
MAX_TITLE = 100  #: characters of the title a comment may ask for
COMMAND_CREDITS = Decimal(3)  #: what one pull request asked for by comment costs
#: Who may spend the account's credits: GitHub's `author_association` of the comment.
ALLOWED_AUTHORS = frozenset({"OWNER", "MEMBER", "COLLABORATOR"})
REQUESTS_PATH = ".outbox/requests"  #: where the pull request adds its request file
#: Unicode categories a title may not hold: controls, format characters (bidi overrides,
#: zero-width), surrogates, private use, unassigned, and line or paragraph separators.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def register(registry: Registry, settings: Settings) -> None:
    """The entry point (`webhook_outbox.handlers`): the service calls it at start-up."""
    registry.on("github", "issue_comment.created", pr_command_handler(settings))


def pr_command_handler(settings: Settings, *, credits: Decimal = COMMAND_CREDITS) -> Handler:
    """The handler, with the price of one pull request and the service's branch prefix."""

    def apply(session: Session, event: EventContext, _prepared: Any) -> NoEffect | None:
        command = read_command(event.payload)
        if isinstance(command, str):
            return NoEffect(command)
        installation = session.get(Installation, command.installation_id)
        if installation is None:
            # Its `installation.created` may not be applied yet: try again, never drop it.
            raise RetryLater(f"installation {command.installation_id} is not known yet")
        if installation.status == InstallationStatus.DELETED:
            return NoEffect(f"installation {installation.id} was deleted")
        try:
            spec = parse_spec(
                {
                    "account": installation.account_id,
                    "installation": installation.id,
                    "repository": command.repository,
                    "title": command.title,
                    "body": f"Asked for by @{command.author} in {command.comment_url}.",
                    "files": [{"path": command.path, "content": command.file_content}],
                    "required_credits": str(credits),
                    "key": f"pr_command:{command.comment_id}",
                }
            )
            job, new = submit(
                session,
                spec,
                now=event.now,
                event_id=event.id,
                branch_prefix=settings.github_branch_prefix,
            )
        except (InvalidJobSpec, JobRejected) as exc:
            raise PermanentFailure(str(exc)) from exc
        if not new:
            return NoEffect(f"comment {command.comment_id} already made job {job.id}")
        return None

    return Handler(name="pr_command", apply=apply)


@dataclass(frozen=True)
class PrCommand:
    """A pull request asked for by a comment someone allowed wrote."""

    installation_id: int
    repository: str
    comment_id: int
    comment_url: str
    author: str
    title: str

    @property
    def path(self) -> str:
        return f"{REQUESTS_PATH}/comment-{self.comment_id}.md"

    @property
    def file_content(self) -> str:
        return f"# {self.title}\n\nAsked for by @{self.author} in {self.comment_url}.\n"


def read_command(payload: dict[str, Any]) -> PrCommand | str:
    """The command of an `issue_comment.created`, or why it is none (a str). A payload
    GitHub would never send (no comment id, no installation) is a PermanentFailure."""
    comment = _object(payload, "comment")
    body = comment.get("body")
    first_line = body.split("\n", 1)[0].removesuffix("\r") if isinstance(body, str) else ""
    if first_line != COMMAND and not first_line.startswith(COMMAND + " "):
        return f"not a {COMMAND} command"
    association = comment.get("author_association")
    if association not in ALLOWED_AUTHORS:
        return f"{COMMAND} by a commenter who may not ask for one ({association!s:.20})"
    title = first_line[len(COMMAND) :].strip()
    problem = title_problem(title)
    if problem is not None:
        return problem
    installation = _object(payload, "installation")
    repository = _object(payload, "repository")
    user = comment.get("user")
    return PrCommand(
        installation_id=_positive_int(installation.get("id"), "installation.id"),
        repository=_string(repository.get("full_name"), "repository.full_name"),
        comment_id=_positive_int(comment.get("id"), "comment.id"),
        comment_url=_string(comment.get("html_url"), "comment.html_url"),
        author=_string(user.get("login") if isinstance(user, dict) else None, "comment.user"),
        title=title,
    )


def title_problem(title: str) -> str | None:
    """Why a title is refused (empty, too long, or holding a character a terminal, a log
    line or GitHub's page would act on instead of showing), or None."""
    if not title:
        return f"{COMMAND} without a title"
    if len(title) > MAX_TITLE:
        return f"{COMMAND} title over {MAX_TITLE} characters"
    if any(unicodedata.category(c) in _REFUSED_CATEGORIES for c in title):
        return f"{COMMAND} title with a control character"
    return None


def _object(payload: dict[str, Any], field: str) -> dict[str, Any]:
    value = payload.get(field)
    if not isinstance(value, dict):
        raise PermanentFailure(f"{field} is missing or not an object")
    return value


def _positive_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**63:
        raise PermanentFailure(f"{where} is missing or not a positive integer")
    return value


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise PermanentFailure(f"{where} is missing or not a string")
    return value
