"""The outbox tables: one row per webhook delivery, the delivery index, and the log of
failed attempts.

On Postgres `webhook_events` is partitioned by `received_at` (outbox/partitions.py keeps
the partitions): its primary key is (id, received_at), and "each delivery once" is kept by
`webhook_deliveries`, whose rows outlive the partitions. On SQLite it is one table whose
unique (source, delivery_id) keeps each delivery once; `webhook_deliveries` stays empty there.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from outbox.db import Base, UTCDateTime
from outbox.states import FINISHED as FINISHED  # re-exported beside the tables
from outbox.states import IN_LINE as IN_LINE
from outbox.states import Source as Source
from outbox.states import Status as Status

#: The predicate of ix_webhook_events_in_line: rows of an object still in line (IN_LINE).
IN_LINE_OBJECTS = (
    f"status IN ({', '.join(repr(status.value) for status in IN_LINE)}) AND object_id IS NOT NULL"
)

#: Integer primary keys: 64-bit on Postgres, SQLite's rowid alias on SQLite.
BigId = BigInteger().with_variant(Integer, "sqlite")


class WebhookEvent(Base):
    __tablename__ = "webhook_events"

    # The id alone names a row (one sequence); received_at is in the key for Postgres,
    # whose partitioned tables' keys must hold the partition key.
    id: Mapped[int] = mapped_column(BigId, autoincrement=True)
    # identity
    source: Mapped[str] = mapped_column(String(16))
    delivery_id: Mapped[str] = mapped_column(String(255))
    # what it is
    event_type: Mapped[str] = mapped_column(String(255))
    livemode: Mapped[bool | None] = mapped_column(Boolean)
    installation_id: Mapped[int | None] = mapped_column(BigInteger)
    stripe_account: Mapped[str | None] = mapped_column(String(255))
    #: The SaaS account (GitHub user or organisation id) when the payload names it.
    account_id: Mapped[int | None] = mapped_column(BigInteger)
    #: The object the event is about ("sub_…", "installation:42"): events of one object go in order.
    object_id: Mapped[str | None] = mapped_column(String(255))
    provider_created_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    hook_id: Mapped[str | None] = mapped_column(String(64))
    api_version: Mapped[str | None] = mapped_column(String(64))
    # what arrived
    raw_body: Mapped[bytes | None] = mapped_column(LargeBinary)  # None once purged
    headers: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: Which configured secret verified it ("github#0" = the first one), never the secret.
    verified_by: Mapped[str | None] = mapped_column(String(64))
    backfilled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    # where it is
    status: Mapped[str] = mapped_column(String(16))  # see ck_webhook_events_status
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    #: Times a worker died or lost its lease while holding the row (see recovery.release_expired).
    interruptions: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The W3C traceparent of the ingress request that stored it (tracing on), else None.
    trace_parent: Mapped[str | None] = mapped_column(String(64))

    __mapper_args__ = {"primary_key": [id]}  # noqa: RUF012 (SQLAlchemy reads it once)
    __table_args__ = (
        PrimaryKeyConstraint("id", "received_at", name="webhook_events_pkey"),
        # SQLite only: Postgres keeps each delivery once through webhook_deliveries.
        UniqueConstraint("source", "delivery_id", name="uq_webhook_events_source_delivery").ddl_if(
            dialect="sqlite"
        ),
        # Partial indexes hold only the rows still in play, so finding the next due row
        # costs the same with a million done rows as with none.
        # In claim order, so a claim walks the oldest due rows and stops when it has enough.
        Index(
            "ix_webhook_events_due",
            "next_attempt_at",
            "id",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
        Index(
            "ix_webhook_events_lease",
            "lease_expires_at",
            postgresql_where=text("status = 'processing'"),
            sqlite_where=text("status = 'processing'"),
        ),
        # Only rows that name an object: nothing but the probe for an object's earlier
        # rows implies this predicate, so a claim or a finishing statement can never take
        # the index for the list of its rows (migrations/versions/0012_in_line_objects.py).
        Index(
            "ix_webhook_events_in_line",
            "source",
            "object_id",
            postgresql_where=text(IN_LINE_OBJECTS),
            sqlite_where=text(IN_LINE_OBJECTS),
        ),
        # The dead rows, which stay until replayed: counted by the sweeper's gauge.
        Index(
            "ix_webhook_events_dead",
            "id",
            postgresql_where=text("status = 'dead'"),
            sqlite_where=text("status = 'dead'"),
        ),
        Index("ix_webhook_events_received_at", "received_at"),
        Index("ix_webhook_events_account", "account_id"),
        # Every row of an object, for the console's timeline of one object's events.
        Index(
            "ix_webhook_events_object",
            "source",
            "object_id",
            "id",
            postgresql_where=text("object_id IS NOT NULL"),
            sqlite_where=text("object_id IS NOT NULL"),
        ),
        {"postgresql_partition_by": "RANGE (received_at)"},
    )


class WebhookDelivery(Base):
    """A delivery ever stored (Postgres): its row's reference, kept after the row is purged,
    so a delivery is stored once across partitions and a very late repeat is still known."""

    __tablename__ = "webhook_deliveries"

    source: Mapped[str] = mapped_column(String(16), primary_key=True)
    delivery_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    event_id: Mapped[int] = mapped_column(BigInteger)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)


class EventFailure(Base):
    """One failed attempt at a row: what went wrong and what was decided."""

    __tablename__ = "webhook_event_failures"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    #: No foreign key: a partitioned table's id alone is not a key. The purge deletes the
    #: failures of the rows it removes.
    event_id: Mapped[int] = mapped_column(BigId, index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    failed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    error: Mapped[str] = mapped_column(Text)
    #: What followed: "retry" (back to pending), "dead", or "lease-expired".
    outcome: Mapped[str] = mapped_column(String(16))
    worker: Mapped[str | None] = mapped_column(String(64))
