"""The named reads operators make of the stored webhooks: every statement here, each with
its purpose, run on a plain DBAPI connection (outbox/driver/dbapi.py) on SQLite and Postgres.

list_events      -- rows matching a filter, newest first, one page at a time (list_page)
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

At tens of millions of rows (webhook_events partitioned by received_at on Postgres) each
read goes through an index or a bounded part of the table: see list_page, find_event (by
the delivery index, webhook_deliveries) and event_stats (outbox/read_layout.py).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any

from outbox.driver.dbapi import Connection, document, flag, utc
from outbox.event_filter import EventFilter, keys_condition, source_list
from outbox.fields import as_int64
from outbox.partition_reads import partitions_preview
from outbox.partition_walk import quoted, tables_bracketing, walked_page
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
from outbox.read_layout import layout
from outbox.states import FINISHED, IN_LINE, REPLAYABLE, Status

# --- the statements ---------------------------------------------------------------------------
# `{where}` is an EventFilter's conditions (outbox/event_filter.py); `= ANY(:list)` takes a
# list.

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
#: The rows the delivery index names for a delivery id (one a source at most): they may
#: have been purged with their partition since.
DELIVERIES_NAMED = (
    "SELECT source, event_id, received_at FROM webhook_deliveries"
    " WHERE source IN ({sources}) AND delivery_id = :delivery_id ORDER BY event_id"
)
#: One row, all of it, by its primary key(s) (`{keys}`: event_filter.keys_condition).
EVENTS_BY_KEYS = (
    f"SELECT {SUMMARY_COLUMNS}, {DETAIL_COLUMNS} FROM webhook_events WHERE {{keys}} ORDER BY id"
)
#: One row, all of it, by id in one table (a partition).
EVENT_IN = f"SELECT {SUMMARY_COLUMNS}, {DETAIL_COLUMNS} FROM {{table}} WHERE id = :id"
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
#: The rows in play (pending, processing, dead) by source and status, read through their
#: partial indexes in one pass over the partitions (planning a statement costs a look at
#: every partition's indexes): their counts, when the oldest due pending row became due
#: (the processors' lag), the dead since a moment, the claims whose lease ran out.
IN_PLAY = (
    "SELECT source, status, count(*) AS n,"
    " min(CASE WHEN status = 'pending' AND next_attempt_at <= :now"
    " THEN next_attempt_at END) AS oldest_due,"
    " count(CASE WHEN status = 'dead' AND processed_at >= :since THEN 1 END) AS dead_since,"
    " count(CASE WHEN status = 'processing' AND lease_expires_at <= :now THEN 1 END)"
    " AS expired_leases"
    " FROM webhook_events"
    " WHERE (status = 'pending' OR status = 'processing' OR status = 'dead')"
    " GROUP BY source, status"
)
#: Finished rows by source and status: reads every one of them (a small table only).
FINISHED_COUNTS = (
    "SELECT source, status, count(*) AS n FROM webhook_events"
    f" WHERE status IN ({', '.join(repr(s.value) for s in FINISHED)}) GROUP BY source, status"
)
#: Accounts with an id, or a login (case-insensitive, as GitHub's); the domain's table.
ACCOUNTS_NAMED = "SELECT id FROM accounts WHERE id = :id OR lower(login) = :login ORDER BY id"

#: Below this many rows (by the statistics) the stats count the finished rows exactly too.
EXACT_COUNT_ROWS = 100_000


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

    A filter an index serves over the whole table (statuses in play only, through their
    partial indexes; a delivery id, through the delivery index) is one statement. Any
    other, on a partitioned table, reads the partitions that may hold matches (by
    since/until) one at a time, the default partition first and then newest first, each
    with the page's LIMIT, until the page is full: a handful of partitions for a filter
    most rows match, more for a rare one (outbox/partition_walk.py: a page not full when
    `budget` has passed is answered as it is, and says how far back it looked).
    """
    shape = layout(db)
    condition, params = where.where(delivery_keys=_delivery_keys(db, where))
    if before_id is not None:
        condition += " AND id < :before_id"
        params["before_id"] = before_id
    if not shape.partitioned or _index_served(where):
        sql = LIST_EVENTS.format(table="webhook_events", where=condition)
        rows = db.rows(sql, limit=limit, offset=offset, **params)
        return EventPage([_summary(row) for row in rows])
    windows = [w for w in shape.windows if w.meets(where.since, where.until)]
    found = walked_page(
        db, windows, LIST_EVENTS, condition, params, wanted=limit + offset, budget=budget
    )
    page = [_summary(row) for row in found.rows[offset:]]
    return EventPage(page, complete=found.complete, searched_since=found.searched_since)


def _index_served(where: EventFilter) -> bool:
    """Whether every matching row is found through an index without reading others."""
    in_play = {s.value for s in (Status.PENDING, Status.PROCESSING, Status.DEAD)}
    return bool(where.delivery_id) or bool(where.statuses and set(where.statuses) <= in_play)


def _delivery_keys(db: Connection, where: EventFilter) -> list[tuple[int, datetime]] | None:
    """The rows (id, received_at) the delivery index names for the filter's delivery id
    and sources; None without a delivery id or a delivery index (the catalog is read only
    for a filter that has one)."""
    if not where.delivery_id or not layout(db).delivery_index:
        return None
    sql = DELIVERIES_NAMED.format(sources=source_list(where.sources))
    return [(d["event_id"], d["received_at"]) for d in db.rows(sql, delivery_id=where.delivery_id)]


def events_after(
    db: Connection, where: EventFilter, *, after_id: int, up_to_id: int, limit: int
) -> list[EventSummary]:
    """Matching rows with after_id < id <= up_to_id, oldest first."""
    condition, params = where.where(delivery_keys=_delivery_keys(db, where))
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
    condition, params = where.where(delivery_keys=_delivery_keys(db, where))
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
        row = _by_id(db, row_id)
        if row is not None:
            return row
    if layout(db).delivery_index:
        named = db.rows(DELIVERIES_NAMED.format(sources=source_list(())), delivery_id=ref)
        keys: dict[str, Any] = {}
        condition = keys_condition([(d["event_id"], d["received_at"]) for d in named], keys)
        rows = db.rows(EVENTS_BY_KEYS.format(keys=condition), **keys) if named else []
    else:
        named, rows = [], db.rows(EVENTS_BY_DELIVERY_ID, delivery_id=ref)
    if len(rows) > 1:
        raise AmbiguousEvent(ref, sorted(r["id"] for r in rows))
    if not rows:
        raise EventNotFound(_not_found(ref, named))
    return rows[0]


def _not_found(ref: str, named: list[dict[str, Any]]) -> str:
    """No row has this id or delivery id: none was stored, or its row was purged."""
    if not named:
        return f"no event has id or delivery id {ref!r}"
    gone = ", ".join(
        f"event {d['event_id']} ({d['source']}, received {utc(d['received_at']):%Y-%m-%d})"
        for d in named
    )
    return f"delivery id {ref!r} was stored as {gone}; its row was purged with its partition"


def _by_id(db: Connection, row_id: int) -> dict[str, Any] | None:
    """The row with this id. On a partitioned table, first in the partitions whose ids
    bracket it (found by halving, a step down one partition's primary key each), then in
    the default partition: a statement over every partition plans each of them, which on
    a fresh connection costs more than the rest of the command. Only an id found in none
    of those is looked for in all of them (ids follow the received time but are not bound
    to it: a row stored with a time of the past)."""
    shape = layout(db)
    if shape.partitioned:
        for table in tables_bracketing(db, shape.windows, row_id):
            row = db.first(EVENT_IN.format(table=quoted(table)), id=row_id)
            if row is not None:
                return row
    return db.first(EVENT_BY_ID, id=row_id)


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
    """What `purge` would remove before `older_than`, and the older unfinished rows it keeps.

    SQLite and an unpartitioned Postgres: counts with the guard of operator_writes.purge
    (finished, received before, body present). A partitioned Postgres: the partitions
    removed whole, with their rows as the statistics estimate them (never counted one by
    one) and their unfinished rows counted exactly through the partial indexes.
    """
    finished = [s.value for s in FINISHED]
    if layout(db).partitioned:
        return partitions_preview(db, older_than, finished)
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
    """The health of the outbox at a glance: the rows in play counted exactly through their
    partial indexes (a backlog of a million pending rows is a million rows read); the
    finished rows counted too while the table holds fewer
    than `exact_below` rows by the statistics (SQLite has none: always), else estimated
    from them (read_layout.Layout.estimated_rows)."""
    shape = layout(db)
    in_play = db.rows(IN_PLAY, now=now, since=now - RECENT_DEAD_WINDOW)
    counts = {(r["source"], r["status"]): int(r["n"]) for r in in_play}
    estimate = shape.estimated_rows
    finished_estimate = None
    if estimate is None or estimate < exact_below:
        counts.update({(r["source"], r["status"]): int(r["n"]) for r in db.rows(FINISHED_COUNTS)})
    else:
        finished_estimate = max(0, estimate - sum(counts.values()))
    due = [moment for r in in_play if (moment := utc(r["oldest_due"])) is not None]
    return EventStats(
        counts=counts,
        finished_estimate=finished_estimate,
        partitions=shape.named_partitions,
        oldest_due_age=(now - min(due)) if due else None,
        dead_last_day=sum(int(r["dead_since"]) for r in in_play),
        expired_leases=sum(int(r["expired_leases"]) for r in in_play),
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
