"""Webhook tables.

`webhook_subscriptions` is the read model of the `webhook-*` streams, with two kinds of column
the log does not carry: the signing secrets (never written to the event log, which portals can
read) and `failing_since` (an operational observation of the sender). `webhook_deliveries` and
`webhook_attempts` are operational records, not events: a delivery is derived from an event and
a subscription by the fan-out follower (replaying the follower from position 0 would rebuild
them), and an attempt is an observation of someone else's server.
"""

from __future__ import annotations

import sqlalchemy as sa

from app.core.db import BigInt, JSONType, UTCDateTime, metadata

webhook_subscriptions = sa.Table(
    "webhook_subscriptions",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("url", sa.String(2048), nullable=False),
    sa.Column("event_types", JSONType, nullable=False, comment="Event type names, or ['*']"),
    sa.Column("unit_id", sa.String(64), nullable=True, comment="Unit filter: that unit and those below"),
    sa.Column("district_id", sa.String(12), nullable=True, comment="The unit's district (scope)"),
    sa.Column("description", sa.String(500), nullable=True),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("disabled_reason", sa.String(500), nullable=True),
    sa.Column("disabled_at", UTCDateTime, nullable=True),
    sa.Column("owner_key_id", sa.String(40), nullable=False, comment="The key that created it"),
    sa.Column("after_position", sa.BigInteger, nullable=False, comment="Events after this position"),
    sa.Column("secret", sa.String(120), nullable=False, comment="whsec_…; not in the event log"),
    sa.Column("previous_secret", sa.String(120), nullable=True),
    sa.Column("previous_secret_expires_at", UTCDateTime, nullable=True),
    sa.Column("failing_since", UTCDateTime, nullable=True, comment="First failure since the last success"),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("version", sa.Integer, nullable=False, comment="Version of the webhook-<id> stream"),
    sa.Index("ix_webhook_subscriptions_created_at_id", "created_at", "id"),
    sa.Index("ix_webhook_subscriptions_unit_id", "unit_id"),
)

webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True, comment="The webhook-id header, stable across retries"),
    sa.Column(
        "subscription_id",
        sa.String(40),
        sa.ForeignKey("webhook_subscriptions.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("kind", sa.String(10), nullable=False, comment="event, ping or notice (log only)"),
    sa.Column("event_type", sa.String(100), nullable=False),
    sa.Column("event_id", sa.Uuid, nullable=True),
    sa.Column("position", sa.BigInteger, nullable=True),
    sa.Column("problem_id", sa.String(36), nullable=True),
    sa.Column("body", sa.Text, nullable=False, comment="The exact bytes sent (UTF-8)"),
    sa.Column("status", sa.String(10), nullable=False, comment="pending, delivered, failed or notice"),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("round_start", sa.Integer, nullable=False, comment="Attempts before this round of retries"),
    sa.Column("next_attempt_at", UTCDateTime, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("last_attempt_at", UTCDateTime, nullable=True),
    sa.Column("delivered_at", UTCDateTime, nullable=True),
    sa.Column("last_status_code", sa.SmallInteger, nullable=True),
    sa.Column("last_error", sa.String(500), nullable=True),
    sa.Column("requested_by", sa.String(40), nullable=True, comment="Pings and manual retries: the key"),
    sa.Index(
        "ix_webhook_deliveries_due",
        "next_attempt_at",
        sqlite_where=sa.text("status = 'pending'"),
        postgresql_where=sa.text("status = 'pending'"),
    ),
    sa.Index("ix_webhook_deliveries_subscription_id_created_at_id", "subscription_id", "created_at", "id"),
)

webhook_attempts = sa.Table(
    "webhook_attempts",
    metadata,
    sa.Column("id", BigInt, primary_key=True, autoincrement=True),
    sa.Column(
        "delivery_id",
        sa.String(40),
        sa.ForeignKey("webhook_deliveries.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("number", sa.Integer, nullable=False),
    sa.Column("attempted_at", UTCDateTime, nullable=False),
    sa.Column("status_code", sa.SmallInteger, nullable=True),
    sa.Column("latency_ms", sa.Integer, nullable=False),
    sa.Column("response", sa.Text, nullable=True, comment="The start of the response body"),
    sa.Column("error", sa.String(500), nullable=True),
    sa.Column("outcome", sa.String(10), nullable=False, comment="delivered, retry, failed or gone"),
    sa.Column("next_retry_at", UTCDateTime, nullable=True),
    sa.Column("sender", sa.String(100), nullable=False, comment="host:pid of the sending process"),
    sa.Index("ix_webhook_attempts_delivery_id_id", "delivery_id", "id"),
)
