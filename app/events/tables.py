"""The event log.

`events` is the one append-only table of every change. `event_positions` gives each committed
event its global position: on SQLite at append time (one writer at a time, so insertion order is
commit order); on PostgreSQL by the sequencer (see `EventStore.sequence`), which numbers the
events of finished transactions in transaction-id order, so positions are gap-free, strictly
increasing, and never appear below a position a reader has already seen. Events themselves are
never updated or deleted.
"""

from __future__ import annotations

import sqlalchemy as sa

from app.core.db import BigInt, JSONType, TxId, UTCDateTime, metadata

events = sa.Table(
    "events",
    metadata,
    sa.Column(
        "id",
        BigInt,
        primary_key=True,
        autoincrement=True,
        comment="Insertion number (internal; not the global position)",
    ),
    sa.Column("event_id", sa.Uuid, nullable=False),
    sa.Column("stream_id", sa.String(200), nullable=False),
    sa.Column("stream_version", sa.Integer, nullable=False),
    sa.Column("type", sa.String(100), nullable=False),
    sa.Column("schema_version", sa.SmallInteger, nullable=False),
    sa.Column("data", JSONType, nullable=False),
    sa.Column("metadata", JSONType, nullable=False, key="meta"),
    sa.Column("occurred_at", UTCDateTime, nullable=False, comment="Business time"),
    sa.Column("recorded_at", UTCDateTime, nullable=False, comment="Server time"),
    sa.Column("tx_id", TxId, nullable=True, comment="Writing transaction (PostgreSQL)"),
    sa.UniqueConstraint("event_id"),
    sa.UniqueConstraint("stream_id", "stream_version"),
    sa.Index("ix_events_tx_id_id", "tx_id", "id"),
)

event_positions = sa.Table(
    "event_positions",
    metadata,
    sa.Column("position", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("event_row", BigInt, sa.ForeignKey("events.id"), nullable=False),
    sa.Column("type", sa.String(100), nullable=False),
    sa.UniqueConstraint("event_row"),
    sa.Index("ix_event_positions_type_position", "type", "position"),
)

# One row: where the PostgreSQL sequencer has got to in (tx_id, id) order.
event_sequencer = sa.Table(
    "event_sequencer",
    metadata,
    sa.Column("id", sa.SmallInteger, primary_key=True, autoincrement=False),
    sa.Column("last_tx", TxId, nullable=False),
    sa.Column("last_row", sa.BigInteger, nullable=False),
    sa.Column("last_position", sa.BigInteger, nullable=False),
)

# What a stored event is, as read back (everything but the internal row id and transaction id).
RECORD_COLUMNS = (
    events.c.event_id,
    events.c.stream_id,
    events.c.stream_version,
    events.c.type,
    events.c.schema_version,
    events.c.data,
    events.c.meta,
    events.c.occurred_at,
    events.c.recorded_at,
)
