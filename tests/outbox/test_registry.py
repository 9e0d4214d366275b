"""The handler registry: patterns, order, and one Handler per event composed of all that match."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import pytest

from outbox.handling import EventContext, Handler, NoEffect, RetryLater
from outbox.registry import InvalidPattern, Registry


def event(event_type: str = "issues.opened", source: str = "github") -> EventContext:
    return EventContext(
        id=1,
        source=source,
        delivery_id="d-1",
        event_type=event_type,
        payload={},
        livemode=None,
        provider_created_at=None,
        installation_id=None,
        stripe_account=None,
        account_id=None,
        attempts=1,
        backfilled=False,
        now=datetime(2026, 12, 1, tzinfo=UTC),
    )


class Journal:
    """Handlers that write what they did, in order, to one list."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def handler(self, name: str, *, prepares: bool = False, no_effect: bool = False) -> Handler:
        def prepare(ctx: EventContext) -> str:
            self.lines.append(f"prepare {name}")
            return f"{name}-prepared"

        def apply(_session: Any, ctx: EventContext, prepared: Any) -> NoEffect | None:
            self.lines.append(f"apply {name} {prepared}")
            return NoEffect(f"{name} saw nothing to do") if no_effect else None

        return Handler(name, apply=apply, prepare=prepare if prepares else None)


def test_a_family_wildcard_matches_the_event_and_each_of_its_actions_only():
    journal, registry = Journal(), Registry()
    registry.on("github", "issues.*", journal.handler("triage"))
    table = registry.table()
    for matched in ("issues", "issues.opened", "issues.closed"):
        assert table.get(("github", matched)) is not None
    for unmatched in ("issue_comment.created", "issuesx.opened", "pull_request.opened"):
        assert table.get(("github", unmatched)) is None
    assert table.get(("stripe", "issues.opened")) is None  # a pattern is per source


def test_a_star_matches_every_event_of_its_source():
    journal, registry = Journal(), Registry()
    registry.on("stripe", "*", journal.handler("audit"))
    table = registry.table()
    assert table.get(("stripe", "invoice.paid")) is not None
    assert table.get(("github", "push")) is None


def test_an_exact_type_keeps_todays_lookup_and_the_handler_itself():
    handler = Journal().handler("grant_pack")
    registry = Registry()
    registry.add_table({("stripe", "checkout.session.completed"): handler})
    table = registry.table()
    assert table[("stripe", "checkout.session.completed")] is handler  # apply_many kept
    assert ("stripe", "checkout.session.completed") in table
    assert table.get(("stripe", "checkout.session.expired")) is None
    assert list(table) == [("stripe", "checkout.session.completed")]


def test_several_handlers_prepare_in_order_then_apply_in_order_whatever_their_pattern():
    journal, registry = Journal(), Registry()
    registry.on("github", "*", journal.handler("first", prepares=True))
    registry.on("github", "issues.opened", journal.handler("second"))
    registry.on("github", "issues.*", journal.handler("third", prepares=True))
    handler = registry.table()[("github", "issues.opened")]
    assert handler.name == "first+second+third"
    assert handler.apply_many is None
    assert handler.prepare is not None
    prepared = handler.prepare(event())
    assert journal.lines == ["prepare first", "prepare third"]  # all before any apply
    assert handler.apply(None, event(), prepared) is None  # type: ignore[arg-type]
    assert journal.lines[2:] == [
        "apply first first-prepared",
        "apply second None",
        "apply third third-prepared",
    ]


def test_a_failure_of_one_handler_stops_the_rest_and_fails_the_event():
    journal, registry = Journal(), Registry()
    registry.on("github", "issues.*", journal.handler("first"))

    def not_yet(_session: Any, _ctx: EventContext, _prepared: Any) -> None:
        raise RetryLater("account unknown")

    registry.on("github", "issues.*", Handler("second", apply=not_yet))
    registry.on("github", "issues.*", journal.handler("third"))
    handler = registry.table()[("github", "issues.opened")]
    with pytest.raises(RetryLater):
        handler.apply(None, event(), None)  # type: ignore[arg-type]
    assert journal.lines == ["apply first None"]  # the transaction rolls it back


def test_no_effect_only_when_no_handler_had_an_effect_with_every_reason():
    journal, registry = Journal(), Registry()
    registry.on("github", "push", journal.handler("a", no_effect=True))
    registry.on("github", "push", journal.handler("b", no_effect=True))
    registry.on("github", "issues.*", journal.handler("a", no_effect=True))
    registry.on("github", "issues.*", journal.handler("c"))
    table = registry.table()
    assert table[("github", "push")].apply(None, event("push"), None) == NoEffect(  # type: ignore[arg-type]
        "a: a saw nothing to do; b: b saw nothing to do"
    )
    assert table[("github", "issues.opened")].apply(None, event(), None) is None  # type: ignore[arg-type]


def test_the_table_is_frozen_when_taken():
    journal, registry = Journal(), Registry()
    registry.on("github", "push", journal.handler("a"))
    table = registry.table()
    registry.on("github", "push", journal.handler("b"))
    assert table[("github", "push")].name == "a"
    assert registry.table()[("github", "push")].name == "a+b"


@pytest.mark.parametrize("pattern", ["", "issues*", "*.opened", "iss*es.opened", " issues", "*.*"])
def test_a_pattern_that_is_no_type_family_or_star_is_refused(pattern):
    with pytest.raises(InvalidPattern):
        Registry().on("github", pattern, Journal().handler("x"))


def test_something_that_is_not_a_handler_is_refused_with_where_it_was_registered():
    with pytest.raises(TypeError, match="github push: expected a Handler"):
        Registry().on("github", "push", lambda *a: None)  # type: ignore[arg-type]


def test_several_handlers_declare_every_account_their_members_lock_for_the_batch():
    """The batch locks a row's accounts before applying anything: a composite keeps the
    locks of its members (their accounts, or the event's own) and locks none of its own."""
    journal, registry = Journal(), Registry()

    def lock(_session: Any, ids: list[int]) -> set[int]:
        return set()

    def named(_session: Any, _ctx: EventContext, prepared: Any) -> list[int]:
        assert prepared == "grant-prepared"
        return [7, 3]

    grant = journal.handler("grant", prepares=True)
    registry.on("stripe", "charge.refunded", Handler(
        "grant", apply=grant.apply, prepare=grant.prepare, accounts=named, lock_accounts=lock,
    ))  # fmt: skip
    own = journal.handler("own")
    registry.on("stripe", "charge.*", Handler("own", apply=own.apply, lock_accounts=lock))
    registry.on("stripe", "*", journal.handler("notes"))  # locks nothing
    handler = registry.table()[("stripe", "charge.refunded")]
    ctx = dataclasses.replace(event("charge.refunded", "stripe"), account_id=5)
    assert handler.lock_accounts is lock and handler.accounts is not None
    assert handler.prepare is not None
    assert handler.accounts(None, ctx, handler.prepare(ctx)) == [3, 5, 7]  # type: ignore[arg-type]
    unlocked = Registry()
    unlocked.on("github", "*", journal.handler("a"))
    unlocked.on("github", "issues.*", journal.handler("b"))
    plain = unlocked.table()[("github", "issues.opened")]
    assert plain.accounts is None and plain.lock_accounts is None
