"""Replay from the console: the dry-run plan first, then the confirmed replay, paced.

The plan is `outbox events replay --dry-run`'s: queries.replay_verdicts (the guard of
operator_writes.replay, with its refusals and reasons) and, for each row replay would take,
the effects it already produced (kept, never applied twice). The confirmed ids are checked
again when the replay runs; it runs in a thread of the console at REPLAY_RATE, in batches of
about one second, ringing the processors after each, as the CLI does, and its page shows
its progress until it is over.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from outbox.cli.common import CommandFailed
from outbox.console.forms import BadInput, FilterForm
from outbox.driver.dbapi import of_session
from outbox.query_results import ReplayVerdict
from outbox.states import IN_LINE, REPLAYABLE

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker
    from starlette.datastructures import QueryParams

    from outbox.settings import Settings

#: Most events one console replay takes (the CLI has no cap; it is for bulk work).
MAX_REPLAY = 1000
#: Rows of a plan whose already-applied effects are looked up (each costs a few reads).
EFFECTS_SHOWN = 20
#: Finished replays the console remembers for their pages.
RUNS_KEPT = 50


@dataclass(frozen=True)
class PlanRow:
    verdict: ReplayVerdict
    #: The effects already applied; None when not looked up (past EFFECTS_SHOWN).
    effects: list[dict[str, Any]] | None


@dataclass(frozen=True)
class ReplayPlan:
    rows: list[PlanRow]
    #: A message for each id or delivery id that names no event.
    unresolved: list[str]
    #: The filter matched more than MAX_REPLAY rows: only the oldest MAX_REPLAY are planned.
    capped: bool

    @property
    def replayable_ids(self) -> list[int]:
        return [row.verdict.id for row in self.rows if row.verdict.replayable]

    @property
    def refused(self) -> list[ReplayVerdict]:
        return [row.verdict for row in self.rows if not row.verdict.replayable]


def plan_replay(session: Session, params: QueryParams, *, now: datetime) -> ReplayPlan:
    """What a replay of the URL's events (`id`: ids or delivery ids, several or comma-
    separated) or of its filter would do."""
    from domain.effects import effects_of_event
    from outbox import queries
    from outbox.cli.event_options import resolve_refs

    form = FilterForm.from_query(params)
    refs = [ref for value in params.getlist("id") for ref in value.replace(",", " ").split()]
    db = of_session(session)
    capped = False
    if refs:
        if len(refs) > MAX_REPLAY:
            raise BadInput(f"{len(refs)} events: the console replays at most {MAX_REPLAY}")
        try:
            ids, unresolved = resolve_refs(db, refs)
        except CommandFailed as exc:
            raise BadInput(str(exc)) from None
    else:
        if not form.given:
            raise BadInput("name the events to replay: select some, or give a filter")
        in_play = [s for s in form.status if s in {x.value for x in IN_LINE}]
        if in_play:
            raise BadInput(
                f"status {in_play[0]}: those rows are already waiting to be processed; "
                f"replay takes {', '.join(s.value for s in REPLAYABLE)}"
            )
        where = form.resolve(db, now)
        if not where.statuses:
            where = replace(where, statuses=tuple(s.value for s in REPLAYABLE))
        ids, unresolved = queries.matching_ids(db, where, limit=MAX_REPLAY + 1), []
        capped = len(ids) > MAX_REPLAY
        ids = ids[:MAX_REPLAY]
    verdicts = queries.replay_verdicts(db, ids)
    looked_up = set([v.id for v in verdicts if v.replayable][:EFFECTS_SHOWN])
    rows = [
        PlanRow(v, effects_of_event(session, v.id) if v.id in looked_up else None) for v in verdicts
    ]
    return ReplayPlan(rows, unresolved, capped)


@dataclass
class ReplayRun:
    """One confirmed replay, as its page shows it while it runs and after."""

    id: int
    total: int
    rate: float
    started_at: datetime
    processed: int = 0
    put_back: set[int] = field(default_factory=set)
    refused: list[ReplayVerdict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    finished: bool = False
    error: str | None = None


class ReplayRuns:
    """The console's replays: each confirmed one runs in a thread of its own, paced."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self._settings = settings
        self._sessions = sessions
        self._runs: dict[int, ReplayRun] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def start(self, ids: list[int], *, now: datetime) -> ReplayRun:
        """Check the ids again (the plan may be stale) and replay those still replayable."""
        from outbox import queries

        with self._sessions() as session:
            verdicts = queries.replay_verdicts(of_session(session), ids)
        todo = [v for v in verdicts if v.replayable]
        run = ReplayRun(next(self._ids), len(todo), self._settings.replay_rate, now)
        run.refused = [v for v in verdicts if not v.replayable]
        with self._lock:
            self._runs[run.id] = run
            for old in sorted(self._runs)[:-RUNS_KEPT]:
                del self._runs[old]
        threading.Thread(
            target=self._replay, args=(run, todo), name=f"console-replay-{run.id}", daemon=True
        ).start()
        return run

    def get(self, run_id: int) -> ReplayRun | None:
        with self._lock:
            return self._runs.get(run_id)

    def _replay(self, run: ReplayRun, todo: list[ReplayVerdict]) -> None:
        from outbox.cli.pacing import CHANGED_WHILE_REPLAYING, replay_paced

        def advanced(batch: list[int], done: list[int]) -> None:
            run.put_back.update(done)
            run.processed += len(batch)

        try:
            ids = [v.id for v in todo]
            _, run.notes = replay_paced(
                self._settings, self._sessions, ids, run.rate, advanced=advanced
            )
            run.refused += [
                replace(v, refusal=CHANGED_WHILE_REPLAYING)
                for v in todo
                if v.id not in run.put_back
            ]
        except Exception as exc:  # the page says what stopped it; the rows put back stay so
            run.error = f"{type(exc).__name__}: {exc}"
        finally:
            run.finished = True
