"""The handler registry: which handlers apply an event, and in what order.

A handler is registered for a source and an event pattern: an exact event type
(`issues.opened`, `checkout.session.completed`), a family (`issues.*`: `issues` itself and
every `issues.<action>`) or `*` (every event of the source). Several handlers may match one
event; they run in the order they were registered, whatever their pattern. The processors
see one `Handler` per (source, event type) (`DispatchTable`), composed from all that match:

- `prepare`: each handler's own, in order, outside any transaction;
- `apply`: each handler's own, in order, in the one transaction that marks the event done,
  so all of them apply or none does (a `RetryLater` from the last rolls back the first);
- `apply_many`: kept only when a single handler matches (several handlers' set-based
  applies cannot fail one event without failing the others' events with it).

docs/handlers.md is the contract for the deploying SaaS's own handlers.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from outbox.handling import EventContext, Handler, HandlerTable, NoEffect

WILDCARD = "*"  #: alone: every event of the source; after "family.": the family


class InvalidPattern(ValueError):
    """An event pattern that is neither an event type, `family.*` nor `*`."""


@dataclass(frozen=True)
class Registration:
    """One handler registered for a source and an event pattern."""

    source: str
    pattern: str
    handler: Handler

    def matches(self, source: str, event_type: str) -> bool:
        if source != self.source:
            return False
        if self.pattern == WILDCARD:
            return True
        if self.pattern.endswith(".*"):
            family = self.pattern[:-2]
            return event_type == family or event_type.startswith(family + ".")
        return event_type == self.pattern


def check_pattern(pattern: str) -> str:
    """`pattern` if it is an event type, `family.*` or `*`; else InvalidPattern."""
    stem = pattern[:-2] if pattern.endswith(".*") else pattern
    if pattern == WILDCARD or (stem and WILDCARD not in stem and stem == stem.strip()):
        return pattern
    raise InvalidPattern(f"event pattern {pattern!r}: expected a type, 'family.*' or '*'")


class Registry:
    """Handlers by (source, event pattern), in the order they were added.

    Usage, in a package's entry point (docs/handlers.md)::

        def register(registry: Registry, settings: Settings) -> None:
            registry.on("github", "issue_comment.created", Handler("pr_command", apply=...))
    """

    def __init__(self) -> None:
        self._registrations: list[Registration] = []

    def on(self, source: str, pattern: str, handler: Handler) -> None:
        """Apply `handler` to every event of `source` that `pattern` matches, after the
        handlers registered before it."""
        if not isinstance(handler, Handler):
            raise TypeError(f"{source} {pattern}: expected a Handler, got {type(handler).__name__}")
        self._registrations.append(Registration(source, check_pattern(pattern), handler))

    def add_table(self, table: HandlerTable) -> None:
        """Every entry of a dispatch table (`HANDLER_TABLE`'s shape), in its order."""
        for (source, pattern), handler in table.items():
            self.on(source, pattern, handler)

    @property
    def registrations(self) -> Sequence[Registration]:
        return tuple(self._registrations)

    def table(self) -> DispatchTable:
        """What the processors look events up in, frozen as registered so far."""
        return DispatchTable(self._registrations)


class DispatchTable(Mapping[tuple[str, str], Handler]):
    """(source, event type) -> the one Handler applying every registered handler that
    matches, in registration order. Iterating gives the registered (source, pattern)
    keys; looking up an event type no handler matches is a KeyError (`get` gives None)."""

    def __init__(self, registrations: Sequence[Registration]) -> None:
        self._registrations = tuple(registrations)
        self._resolved: dict[tuple[str, str], Handler | None] = {}
        self._lock = threading.Lock()  # worker threads resolve types side by side

    def get(self, key: tuple[str, str], default: Any = None) -> Any:
        """The handler of (source, event type), or `default`: the processors' lookup, once
        per event, so an unhandled type costs a dict lookup, not a KeyError."""
        handler = self._resolved.get(key, _UNRESOLVED)
        if handler is _UNRESOLVED:
            with self._lock:
                handler = self._resolved.setdefault(key, self._resolve(*key))
        return default if handler is None else handler

    def __getitem__(self, key: tuple[str, str]) -> Handler:
        handler = self.get(key)
        if handler is None:
            raise KeyError(key)
        assert isinstance(handler, Handler)
        return handler

    def __iter__(self) -> Iterator[tuple[str, str]]:
        seen: dict[tuple[str, str], None] = {}
        for registration in self._registrations:
            seen.setdefault((registration.source, registration.pattern))
        return iter(seen)

    def __len__(self) -> int:
        return len({(r.source, r.pattern) for r in self._registrations})

    def __contains__(self, key: object) -> bool:
        return isinstance(key, tuple) and self.get(key) is not None

    def matching(self, source: str, event_type: str) -> list[Handler]:
        """Every handler that applies an event of this type, in the order they run."""
        return [r.handler for r in self._registrations if r.matches(source, event_type)]

    def _resolve(self, source: str, event_type: str) -> Handler | None:
        handlers = self.matching(source, event_type)
        if not handlers:
            return None
        if len(handlers) == 1:
            return handlers[0]
        return compose(handlers)


_UNRESOLVED: Any = object()


def compose(handlers: Sequence[Handler]) -> Handler:
    """One Handler that runs each of `handlers` in order: prepares outside the transaction,
    applies inside it. Its `prepared` is the tuple of theirs. It changed nothing (NoEffect)
    only when none of them changed anything."""
    members = tuple(handlers)

    def prepare(event: EventContext) -> tuple[Any, ...]:
        return tuple(h.prepare(event) if h.prepare is not None else None for h in members)

    def apply(session: Session, event: EventContext, prepared: Any) -> NoEffect | None:
        parts = prepared if prepared is not None else (None,) * len(members)
        results = [h.apply(session, event, own) for h, own in zip(members, parts, strict=True)]
        notes = [result for result in results if isinstance(result, NoEffect)]
        if len(notes) < len(results):
            return None
        said = zip(members, notes, strict=True)
        return NoEffect("; ".join(f"{handler.name}: {note.reason}" for handler, note in said))

    # The batch locks a row's accounts before applying anything (the lock order in
    # outbox/handling.py): the composite declares every account its members lock.
    locking = [h for h in members if h.lock_accounts is not None]

    def accounts(session: Session, event: EventContext, prepared: Any) -> list[int]:
        parts = prepared if prepared is not None else (None,) * len(members)
        found: set[int] = set()
        for handler, own in zip(members, parts, strict=True):
            if handler.lock_accounts is None:
                continue
            if handler.accounts is not None:
                found.update(handler.accounts(session, event, own))
            elif event.account_id is not None:
                found.add(event.account_id)
        return sorted(found)

    return Handler(
        name="+".join(h.name for h in members),
        apply=apply,
        prepare=prepare if any(h.prepare is not None for h in members) else None,
        accounts=accounts if locking else None,
        lock_accounts=locking[0].lock_accounts if locking else None,
    )
