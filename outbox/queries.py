"""The named reads operators make of the stored webhooks: every statement here, each with
its purpose, run on a plain DBAPI connection (outbox/driver/dbapi.py) on SQLite and Postgres.

list_events      -- rows matching a filter, newest first, one page at a time
events_after     -- matching rows past an id, oldest first (`events tail`)
summaries_of     -- some rows by id, as a listing shows them
newest_id        -- the highest id stored
settled_id       -- the highest id of a row received before a moment
matching_ids     -- every id matching a filter (what a bulk replay or retry takes)
find_event       -- one row by id or delivery id, with its failed attempts
replay_verdicts  -- for each id asked, whether replay may take it, and why not
purge_preview    -- what `purge` would remove, and the unfinished rows it leaves alone
known_deliveries -- which of some provider ids are stored already (reconcile)
event_stats      -- counts by source and status, the lag, the recent dead
account_id_named -- the account an operator names by id or login (the `--account` filter)

The CLI calls these and outbox/operator_writes.py's writes; it never builds a query itself.
What they return is in outbox/query_results.py.

At tens of millions of rows (Postgres, webhook_events partitioned by received_at) every
read goes through an index or a bounded part of the table: a listing walks the partitions
newest first and stops when its page is full (list_page); a delivery id is found through
the delivery index webhook_deliveries; the stats count the rows in play through their
partial indexes and estimate the finished ones from the statistics (outbox/read_layout.py).
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from outbox.driver.dbapi import Connection, document, flag, utc
from outbox.fields import as_int64
from outbox.query_results import (
    RECENT_DEAD_WINDOW,
    AmbiguousEvent,
    Attempt,
    EventDetail,
    EventNotFound,
    EventPage,
    EventStats,
    EventSummary,
    PurgePreview,
    ReplayVerdict,
)
from outbox.read_layout import Window, layout
from outbox.states import FINISHED, IN_LINE, REPLAYABLE, Source, Status

# --- the statements ---------------------------------------------------------------------------
# `{where}` is an EventFilter's conditions (FILTER_CONDITIONS); `= ANY(:list)` takes a list.

#: The columns of a row as a listing shows it (EventSummary).
SUMMARY_COLUMNS = (
    "id, source, delivery_id, event_type, status, attempts, received_at, next_attempt_at,"
    " processed_at, account_id, object_id, livemode, backfilled, last_error, purged_at"
)
#: The columns `show` adds to a summary (EventDetail).
DETAIL_COLUMNS = (
    "raw_body, headers, verified_by, installation_id, stripe_account, provider_created_at,"
    " hook_id, api_version, lease_owner, lease_expires_at"
)

#: One page of matching rows of `{table}` (webhook_events, or one of its partitions),
#: newest first.
LIST_EVENTS = (
    f"SELECT {SUMMARY_COLUMNS} FROM {{table}} WHERE {{where}}"
    " ORDER BY id DESC LIMIT :limit OFFSET :offset"
)
#: Matching rows received before the partitions a listing walked whose id is above its
#: page's lowest: ids are taken before the commit, so one may cross a partition's bound.
#: Costs a probe of each older partition's primary key (id first).
STRAGGLERS = (
    f"SELECT {SUMMARY_COLUMNS} FROM webhook_events WHERE {{where}}"
    " AND received_at < :walked_since AND id > :lowest ORDER BY id DESC LIMIT :limit"
)
#: Matching rows in a range of the primary key, oldest first: costs the rows in the range.
EVENTS_AFTER = (
    f"SELECT {SUMMARY_COLUMNS} FROM webhook_events"
    " WHERE {where} AND id > :after_id AND id <= :up_to_id ORDER BY id LIMIT :limit"
)
#: Some rows by id (primary-key lookups), as a listing shows them.
SUMMARIES_OF = f"SELECT {SUMMARY_COLUMNS} FROM webhook_events WHERE id = ANY(:ids)"
#: The highest id stored: one step down the primary key.
NEWEST_ID = "SELECT max(id) FROM webhook_events"
#: The highest id received before a moment, walking the primary key down from the top.
SETTLED_ID = "SELECT id FROM webhook_events WHERE received_at < :before ORDER BY id DESC LIMIT 1"
#: Ids of the matching rows, oldest first (the order a replay puts them back).
MATCHING_IDS = "SELECT id FROM webhook_events WHERE {where} ORDER BY id"
#: One row, all of it, by id.
EVENT_BY_ID = f"SELECT {SUMMARY_COLUMNS}, {DETAIL_COLUMNS} FROM webhook_events WHERE id = :id"
#: The rows stored under a delivery id (one a source at most), where webhook_events has
#: its own unique (source, delivery_id) index (SQLite; Postgres before the partitions).
EVENTS_BY_DELIVERY_ID = (
    f"SELECT {SUMMARY_COLUMNS}, {DETAIL_COLUMNS} FROM webhook_events"
    " WHERE delivery_id = :delivery_id ORDER BY id"
)
#: The same through the delivery index: its primary key, then the row by (id, received_at),
#: which prunes every partition but one.
EVENTS_BY_DELIVERY_INDEX = (
    f"SELECT {SUMMARY_COLUMNS}, {DETAIL_COLUMNS} FROM webhook_events"
    " WHERE {in_deliveries} ORDER BY id"
)
#: What the delivery index remembers of a delivery id: its rows may have been purged.
DELIVERIES_NAMED = (
    "SELECT source, event_id, received_at FROM webhook_deliveries"
    " WHERE source IN ({sources}) AND delivery_id = :delivery_id ORDER BY event_id"
)
#: One row's failed attempts, in the order they failed.
FAILURES_OF = (
    "SELECT attempt, failed_at, outcome, error, worker FROM webhook_event_failures"
    " WHERE event_id = :event_id ORDER BY id"
)
#: What replay's guard looks at for some rows: the status and whether the body is there.
REPLAY_FACTS = (
    "SELECT id, delivery_id, event_type, status, purged_at, raw_body IS NULL AS body_gone"
    " FROM webhook_events WHERE id = ANY(:ids)"
)
#: Rows received before a moment: finished with a body (purge's guard), and unfinished.
PURGE_COUNTS = (
    "SELECT count(CASE WHEN status = ANY(:finished) AND raw_body IS NOT NULL THEN 1 END)"
    " AS purgeable, count(CASE WHEN NOT (status = ANY(:finished)) THEN 1 END) AS unfinished"
    " FROM webhook_events WHERE received_at < :older_than"
)
#: Which of some provider ids a source has stored.
KNOWN_DELIVERIES = (
    "SELECT delivery_id FROM webhook_events"
    " WHERE source = :source AND delivery_id = ANY(:delivery_ids)"
)
#: The same from the delivery index, which also remembers the deliveries whose rows the
#: purge removed with their partition.
KNOWN_IN_DELIVERY_INDEX = (
    "SELECT delivery_id FROM webhook_deliveries"
    " WHERE source = :source AND delivery_id = ANY(:delivery_ids)"
)
#: Rows by source of each status in play, each counted through its own partial index.
IN_PLAY_COUNTS = " UNION ALL ".join(
    f"SELECT source, '{status}' AS status, count(*) AS n FROM webhook_events"
    f" WHERE status = '{status}' GROUP BY source"
    for status in (Status.PENDING, Status.PROCESSING, Status.DEAD)
)
#: Finished rows by source and status: reads every one of them (a small table only).
FINISHED_COUNTS = (
    "SELECT source, status, count(*) AS n FROM webhook_events"
    f" WHERE status IN ({', '.join(repr(s.value) for s in FINISHED)}) GROUP BY source, status"
)
#: When the oldest due pending row became due (the processors' lag).
OLDEST_DUE = (
    "SELECT min(next_attempt_at) FROM webhook_events"
    " WHERE status = 'pending' AND next_attempt_at <= :now"
)
#: Rows that became dead since a moment.
DEAD_SINCE = "SELECT count(*) FROM webhook_events WHERE status = 'dead' AND processed_at >= :since"
#: Claimed rows whose lease ran out (the sweeper gives them back).
EXPIRED_LEASES = (
    "SELECT count(*) FROM webhook_events WHERE status = 'processing' AND lease_expires_at <= :now"
)
#: Accounts with an id, or a login (case-insensitive, as GitHub's); the domain's table.
ACCOUNTS_NAMED = "SELECT id FROM accounts WHERE id = :id OR lower(login) = :login ORDER BY id"

#: The condition each field of an EventFilter adds when it is set; they all must hold.
#: Statuses are written out (see EventFilter.where); a delivery id is looked up through
#: the delivery index where there is one (IN_DELIVERIES).
FILTER_CONDITIONS = {
    "sources": "source = ANY(:sources)",
    "event_type": "event_type LIKE :event_type ESCAPE '\\'",
    "account_id": "account_id = :account_id",
    "since": "received_at >= :since",
    "until": "received_at < :until",
    "delivery_id": "delivery_id = :delivery_id",
}
#: The rows the delivery index names for a delivery id, `{sources}` the sources asked.
IN_DELIVERIES = (
    "(id, received_at) IN (SELECT event_id, received_at FROM webhook_deliveries"
    " WHERE source IN ({sources}) AND delivery_id = :delivery_id)"
)
#: How long a listing keeps walking older partitions for a full page before it answers
#: with what it found and how far back it looked (EventPage): a filter no index serves
#: (a type, a finished status) would otherwise read every partition for a rare match.
LIST_SCAN_BUDGET = timedelta(milliseconds=100)
#: Below this many rows (by the statistics) the stats count the finished rows exactly too.
EXACT_COUNT_ROWS = 100_000


# --- the filter -------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventFilter:
    """What an operator is looking for; every field left empty matches everything."""

    statuses: Collection[str] = ()
    sources: Collection[str] = ()
    #: An event type, `*` matching any run of characters ("invoice.*", "*.deleted").
    event_type: str | None = None
    account_id: int | None = None
    #: Received at or after / strictly before.
    since: datetime | None = None
    until: datetime | None = None
    delivery_id: str | None = None

    def where(self, *, delivery_index: bool = False) -> tuple[str, dict[str, Any]]:
        """The SQL condition for `{where}` and its parameters; `delivery_index`: a delivery
        id is looked up in webhook_deliveries (read_layout.Layout.delivery_index)."""
        conditions = [status_condition(self.statuses)] if self.statuses else []
        params: dict[str, Any] = {}
        if self.sources:
            params["sources"] = list(self.sources)
        if self.event_type:
            params["event_type"] = like_pattern(self.event_type)
        if self.account_id is not None:
            params["account_id"] = self.account_id
        if self.since is not None:
            params["since"] = self.since
        if self.until is not None:
            params["until"] = self.until
        if self.delivery_id:
            params["delivery_id"] = self.delivery_id
        for name in params:
            if name == "delivery_id" and delivery_index:
                conditions.append(IN_DELIVERIES.format(sources=source_list(self.sources)))
            else:
                conditions.append(FILTER_CONDITIONS[name])
        return " AND ".join(conditions) or "TRUE", params


def status_condition(statuses: Collection[str]) -> str:
    """The statuses written out, one equality each, OR'd: Postgres can then read each
    status in play (pending, processing, dead) from its partial index, and OR their
    bitmaps; a list parameter would hide which ones are asked. A name that is no status
    matches nothing."""
    known = [s for s in dict.fromkeys(statuses) if s in STATUS_NAMES]
    return "(" + " OR ".join(f"status = '{s}'" for s in known) + ")" if known else "FALSE"


def source_list(sources: Collection[str]) -> str:
    """The sources as SQL literals (every source when none is given): the delivery index's
    primary key starts with the source, so each is one descent of it."""
    known = [s for s in dict.fromkeys(sources or SOURCE_NAMES) if s in SOURCE_NAMES]
    return ", ".join(f"'{s}'" for s in known) or "NULL"


STATUS_NAMES = frozenset(s.value for s in Status)
SOURCE_NAMES = tuple(s.value for s in Source)


def like_pattern(wildcard: str) -> str:
    """`*` becomes SQL's `%`; SQL's own `%` and `_` are matched literally."""
    escaped = wildcard.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%")


# --- listing ----------------------------------------------------------------------------------


def list_events(
    db: Connection,
    where: EventFilter,
    *,
    limit: int,
    before_id: int | None = None,
    offset: int = 0,
) -> list[EventSummary]:
    """One page of matching rows, newest first (highest id first).

    Page with `before_id` (the last id of the previous page: stable while rows arrive)
    or with `offset`. The rows of list_page: see there what a page may leave unsearched.
    """
    return list_page(db, where, limit=limit, before_id=before_id, offset=offset).rows


def list_page(
    db: Connection,
    where: EventFilter,
    *,
    limit: int,
    before_id: int | None = None,
    offset: int = 0,
    budget: timedelta | None = None,
) -> EventPage:
    """One page of matching rows, newest first, and how far back it looked.

    On a partitioned table the partitions that may hold matches (by since/until) are read
    one at a time, the default partition first and then newest first, each with the page's
    LIMIT, until the page is full: a filter an index serves (an in-play status, an account,
    a delivery id, times) costs a few index probes a partition; one no index serves reads a
    partition until it finds its page. When `budget` (LIST_SCAN_BUDGET) has passed before
    the page is full, the page is answered as it is, `searched_since` the oldest moment it
    covered.
    """
    shape = layout(db)
    condition, params = where.where(delivery_index=shape.delivery_index)
    if before_id is not None:
        condition += " AND id < :before_id"
        params["before_id"] = before_id
    if not shape.partitioned or where.delivery_id:  # one table, or a few rows by index
        sql = LIST_EVENTS.format(table="webhook_events", where=condition)
        rows = db.rows(sql, limit=limit, offset=offset, **params)
        return EventPage([_summary(row) for row in rows])
    windows = [w for w in shape.windows if w.meets(where.since, where.until)]
    budget = LIST_SCAN_BUDGET if budget is None else budget
    return _walked_page(db, windows, condition, params, limit + offset, budget, offset)


def _walked_page(
    db: Connection,
    windows: list[Window],
    condition: str,
    params: dict[str, Any],
    wanted: int,
    budget: timedelta,
    offset: int,
) -> EventPage:
    """The first `wanted` matching rows by id, walking `windows` in their order."""
    found: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + budget.total_seconds()
    walked = 0
    for window in windows:
        sql = LIST_EVENTS.format(table=_quoted(window.table), where=condition)
        found.update((row["id"], row) for row in db.rows(sql, limit=wanted, offset=0, **params))
        walked += 1
        if len(found) >= wanted or time.monotonic() > deadline:
            break
    rest = windows[walked:]
    walked_since = _walked_since(windows[:walked])
    if rest and walked_since is not None and len(found) >= wanted:
        lowest = sorted(found, reverse=True)[wanted - 1]
        sql = STRAGGLERS.format(where=condition)
        more = db.rows(sql, walked_since=walked_since, lowest=lowest, limit=wanted, **params)
        found.update((row["id"], row) for row in more)
    page = [_summary(found[i]) for i in sorted(found, reverse=True)[offset:wanted]]
    if rest and len(found) < wanted:
        return EventPage(page, complete=False, searched_since=walked_since)
    return EventPage(page)


def _walked_since(walked: list[Window]) -> datetime | None:
    """The oldest moment the walked partitions cover (the default one covers none)."""
    lowers = [w.lower for w in walked if not w.default and w.lower is not None]
    return min(lowers) if lowers else None


def _delivery_index(db: Connection, where: EventFilter) -> bool:
    """Whether the filter's delivery id is looked up in the delivery index (the catalog is
    read only for a filter that has one)."""
    return bool(where.delivery_id) and layout(db).delivery_index


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def events_after(
    db: Connection, where: EventFilter, *, after_id: int, up_to_id: int, limit: int
) -> list[EventSummary]:
    """Matching rows with after_id < id <= up_to_id, oldest first."""
    condition, params = where.where(delivery_index=_delivery_index(db, where))
    sql = EVENTS_AFTER.format(where=condition)
    rows = db.rows(sql, after_id=after_id, up_to_id=up_to_id, limit=limit, **params)
    return [_summary(row) for row in rows]


def summaries_of(db: Connection, ids: Collection[int]) -> list[EventSummary]:
    """These rows as a listing shows them, by id; missing ids left out."""
    if not ids:
        return []
    return [_summary(row) for row in db.rows(SUMMARIES_OF, ids=sorted(ids))]


def newest_id(db: Connection) -> int:
    """The highest id stored (0 for an empty table)."""
    return int(db.value(NEWEST_ID) or 0)


def settled_id(db: Connection, before: datetime) -> int:
    """The highest id of a row received before `before` (0: none): rows below it that are
    not visible yet never will be (ids are taken before commit; see outbox/event_tail.py)."""
    return int(db.value(SETTLED_ID, before=before) or 0)


def matching_ids(db: Connection, where: EventFilter, *, limit: int | None = None) -> list[int]:
    """Ids of every row matching `where`, oldest first (the order a replay puts them back)."""
    condition, params = where.where(delivery_index=_delivery_index(db, where))
    sql = MATCHING_IDS.format(where=condition)
    if limit is not None:
        sql += " LIMIT :limit"
        params["limit"] = limit
    return [row["id"] for row in db.rows(sql, **params)]


def _summary(row: dict[str, Any]) -> EventSummary:
    return EventSummary(
        id=row["id"],
        source=row["source"],
        delivery_id=row["delivery_id"],
        event_type=row["event_type"],
        status=row["status"],
        attempts=row["attempts"],
        received_at=utc(row["received_at"]),  # type: ignore[arg-type]
        next_attempt_at=utc(row["next_attempt_at"]),
        processed_at=utc(row["processed_at"]),
        account_id=row["account_id"],
        object_id=row["object_id"],
        livemode=flag(row["livemode"]),
        backfilled=bool(row["backfilled"]),
        last_error=row["last_error"],
        purged_at=utc(row["purged_at"]),
    )


# --- one event --------------------------------------------------------------------------------


def find_event(db: Connection, ref: str) -> EventDetail:
    """The row whose id is `ref`, or else whose delivery id is; raises EventNotFound, or
    AmbiguousEvent when several sources stored that delivery id."""
    ref = ref.strip()
    row = _by_ref(db, ref)
    failures = db.rows(FAILURES_OF, event_id=row["id"])
    return EventDetail(
        summary=_summary(row),
        raw_body=bytes(row["raw_body"]) if row["raw_body"] is not None else None,
        headers=dict(document(row["headers"]) or {}),
        verified_by=row["verified_by"],
        installation_id=row["installation_id"],
        stripe_account=row["stripe_account"],
        provider_created_at=utc(row["provider_created_at"]),
        hook_id=row["hook_id"],
        api_version=row["api_version"],
        lease_owner=row["lease_owner"],
        lease_expires_at=utc(row["lease_expires_at"]),
        failures=[
            Attempt(f["attempt"], utc(f["failed_at"]), f["outcome"], f["error"], f["worker"])  # type: ignore[arg-type]
            for f in failures
        ],
    )


def _by_ref(db: Connection, ref: str) -> dict[str, Any]:
    row_id = as_int64(ref)  # ASCII digits within 64 bits: anything else is a delivery id
    if row_id is not None:
        row = db.first(EVENT_BY_ID, id=row_id)
        if row is not None:
            return row
    delivery_index = layout(db).delivery_index
    if delivery_index:
        in_deliveries = IN_DELIVERIES.format(sources=source_list(()))
        sql = EVENTS_BY_DELIVERY_INDEX.format(in_deliveries=in_deliveries)
        rows = db.rows(sql, delivery_id=ref)
    else:
        rows = db.rows(EVENTS_BY_DELIVERY_ID, delivery_id=ref)
    if len(rows) > 1:
        raise AmbiguousEvent(ref, sorted(r["id"] for r in rows))
    if not rows:
        raise EventNotFound(_not_found(db, ref) if delivery_index else _NO_SUCH.format(ref=ref))
    return rows[0]


_NO_SUCH = "no event has id or delivery id {ref!r}"


def _not_found(db: Connection, ref: str) -> str:
    """Why no row has this delivery id: none was stored, or its row was purged."""
    named = db.rows(DELIVERIES_NAMED.format(sources=source_list(())), delivery_id=ref)
    if not named:
        return _NO_SUCH.format(ref=ref)
    gone = ", ".join(
        f"event {d['event_id']} ({d['source']}, received {utc(d['received_at']):%Y-%m-%d})"
        for d in named
    )
    return f"delivery id {ref!r} was stored as {gone}; its row was purged with its partition"


def replay_verdicts(db: Connection, ids: Sequence[int]) -> list[ReplayVerdict]:
    """For each id, in the order given: replayable, or why operator_writes.replay leaves it.

    Mirrors the guard of operator_writes.replay (finished or dead, body still there), so the plan an
    operator reads is the one the store will follow.
    """
    rows = {r["id"]: r for r in db.rows(REPLAY_FACTS, ids=list(ids))} if ids else {}
    verdicts = []
    in_line = {s.value for s in IN_LINE}
    replayable = {s.value for s in REPLAYABLE}
    for event_id in ids:
        row = rows.get(event_id)
        if row is None:
            verdicts.append(ReplayVerdict(event_id, None, None, None, "no such event"))
            continue
        status = row["status"]
        refusal = None
        if status in in_line:
            refusal = f"still {status}: it is already waiting to be processed" + (
                " (`outbox events retry` makes it due now)" if status == "pending" else ""
            )
        elif status not in replayable:
            refusal = f"status {status} cannot be replayed"
        elif row["body_gone"]:
            purged_at = utc(row["purged_at"])
            when = purged_at.date().isoformat() if purged_at else "earlier"
            refusal = f"purged ({when}): its body is gone, so there is nothing to process"
        verdicts.append(
            ReplayVerdict(row["id"], row["delivery_id"], row["event_type"], status, refusal)
        )
    return verdicts


# --- counts -----------------------------------------------------------------------------------


def purge_preview(db: Connection, *, older_than: datetime) -> PurgePreview:
    """Counts with the guard of operator_writes.purge: finished, received before, body present."""
    finished = [s.value for s in FINISHED]
    row = db.first(PURGE_COUNTS, older_than=older_than, finished=finished) or {}
    return PurgePreview(int(row.get("purgeable") or 0), int(row.get("unfinished") or 0))


def known_deliveries(db: Connection, source: str, delivery_ids: Collection[str]) -> set[str]:
    """Which of these provider ids (Stripe event ids, GitHub delivery guids) are stored."""
    if not delivery_ids:
        return set()
    wanted = list(dict.fromkeys(delivery_ids))
    sql = KNOWN_IN_DELIVERY_INDEX if layout(db).delivery_index else KNOWN_DELIVERIES
    rows = db.rows(sql, source=source, delivery_ids=wanted)
    return {row["delivery_id"] for row in rows}


def event_stats(
    db: Connection, *, now: datetime, exact_below: int = EXACT_COUNT_ROWS
) -> EventStats:
    """The health of the outbox at a glance: the rows in play counted exactly, each status
    through its partial index; the finished rows counted too while the table holds fewer
    than `exact_below` rows by the statistics (SQLite has none: always), else estimated
    from them (read_layout.Layout.estimated_rows)."""
    shape = layout(db)
    counts = {(r["source"], r["status"]): int(r["n"]) for r in db.rows(IN_PLAY_COUNTS)}
    estimate = shape.estimated_rows
    finished_estimate = None
    if estimate is None or estimate < exact_below:
        counts.update({(r["source"], r["status"]): int(r["n"]) for r in db.rows(FINISHED_COUNTS)})
    else:
        finished_estimate = max(0, estimate - sum(counts.values()))
    oldest_due = utc(db.value(OLDEST_DUE, now=now))
    return EventStats(
        counts=counts,
        finished_estimate=finished_estimate,
        partitions=shape.named_partitions,
        oldest_due_age=(now - oldest_due) if oldest_due is not None else None,
        dead_last_day=int(db.value(DEAD_SINCE, since=now - RECENT_DEAD_WINDOW) or 0),
        expired_leases=int(db.value(EXPIRED_LEASES, now=now) or 0),
    )


def account_id_named(db: Connection, ref: str) -> int | None:
    """The id of the account `ref` names: its id, else its login when one account alone
    carries it (a rename may leave two; no guessing); None when none does."""
    ref = ref.strip()
    account_id = as_int64(ref)
    found = [row["id"] for row in db.rows(ACCOUNTS_NAMED, id=account_id, login=ref.lower())]
    if account_id is not None and account_id in found:
        return account_id
    return found[0] if len(found) == 1 else None
