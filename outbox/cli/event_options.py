"""The options that select stored events (`events list | tail | replay | retry`), and what
they mean: the filter, the account an operator names, the ids or delivery ids given."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import typer

from outbox.cli.common import account_ref, fail, id_argument, usage_error
from outbox.cli.timespec import DURATION_HELP, parse_moment
from outbox.states import Source, Status

# The reads are imported inside the functions: `outbox --help` loads none of them.
if TYPE_CHECKING:
    from outbox.driver.dbapi import Connection
    from outbox.queries import EventFilter

STATUS_OPTION = typer.Option(None, "--status", help="Only this status (repeatable).")
SOURCE_OPTION = typer.Option(None, "--source", help="Only this source (repeatable).")
TYPE_OPTION = typer.Option(
    None, "--type", help="Event type; * matches anything: 'invoice.*', '*.deleted'."
)
ACCOUNT_OPTION = typer.Option(None, "--account", help="Account: numeric GitHub id, or login.")
SINCE_OPTION = typer.Option(None, "--since", help=f"Received at or after: {DURATION_HELP}.")
UNTIL_OPTION = typer.Option(None, "--until", help=f"Received before: {DURATION_HELP}.")
DELIVERY_OPTION = typer.Option(
    None, "--delivery", help="GitHub delivery id or Stripe event id (evt_…)."
)


@dataclass(frozen=True)
class FilterArgs:
    """The filter options as typed on the command line, before they are understood."""

    status: Sequence[Status] | None = None
    source: Sequence[Source] | None = None
    event_type: str | None = None
    account: str | None = None
    since: str | None = None
    until: str | None = None
    delivery: str | None = None

    @property
    def given(self) -> bool:
        return any(getattr(self, field.name) for field in fields(self))

    def resolve(self, db: Connection, now: datetime) -> EventFilter:
        """The filter they mean; exit 2 for times that make no sense, 1 for an unknown login."""
        from outbox.queries import EventFilter

        since = parse_moment(self.since, "--since", now=now) if self.since else None
        until = parse_moment(self.until, "--until", now=now) if self.until else None
        if since and until and since >= until:
            usage_error(
                f"--since ({since:%Y-%m-%d %H:%M}) is not before --until ({until:%Y-%m-%d %H:%M})"
            )
        return EventFilter(
            statuses=tuple(s.value for s in self.status or ()),
            sources=tuple(s.value for s in self.source or ()),
            event_type=self.event_type,
            account_id=account_id(db, self.account) if self.account else None,
            since=since,
            until=until,
            delivery_id=self.delivery,
        )


def account_id(db: Connection, ref: str) -> int:
    """The account's id: a known id or login, or a numeric id no account row has (yet)."""
    from outbox.queries import account_id_named

    ref = account_ref(ref)
    found = account_id_named(db, ref)
    if found is not None:
        return found
    if ref.isdigit():  # events may name an account before it exists here
        return int(ref)
    fail(f"no account with login or id {ref!r}")


def refs_or_filters(refs: Sequence[str] | None, args: FilterArgs, missing: str) -> None:
    """Exit 2 unless exactly one of the two ways to name events was used."""
    if refs and args.given:
        usage_error("give event ids or filters, not both")
    if not refs and not args.given:
        usage_error(missing)


def selected_ids(
    db: Connection,
    refs: Sequence[str] | None,
    args: FilterArgs,
    *,
    limit: int | None,
    statuses: tuple[str, ...],
) -> tuple[list[int], list[str]]:
    """The ids the refs name (and a message for each that names nothing), or the ids the
    filters match, oldest first: of `statuses` unless the filters chose some."""
    from outbox.queries import matching_ids

    if refs:
        return resolve_refs(db, refs)
    where = args.resolve(db, datetime.now(UTC))
    if not where.statuses:
        where = replace(where, statuses=statuses)
    return matching_ids(db, where, limit=limit), []


def resolve_refs(db: Connection, refs: Sequence[str]) -> tuple[list[int], list[str]]:
    """Ids for each ref (id or delivery id), and a message for each that names nothing."""
    from outbox.queries import find_event
    from outbox.query_results import AmbiguousEvent, EventNotFound

    ids: list[int] = []
    unresolved: list[str] = []
    for ref in refs:
        try:
            found = find_event(db, ref).summary.id
        except (EventNotFound, AmbiguousEvent) as exc:
            refuse_unusable_id(ref)
            unresolved.append(str(exc))
            continue
        if found not in ids:
            ids.append(found)
    return ids, unresolved


def refuse_unusable_id(ref: str) -> None:
    """Digits that name no delivery and cannot be a row id are a mistyped id: exit 2."""
    if ref.strip().isdigit():
        id_argument(ref, "event id")
