"""Webhooks: subscriptions (the read model of the webhook-* streams), deliveries and attempts.

Revision ID: c8048ce0cb66
Revises: 16966f28ee13
Create Date: 2026-11-21 17:05:16.403443
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import app.core.db  # noqa: F401  (custom column types: app.core.db.UTCDateTime …)

revision: str = "c8048ce0cb66"
down_revision: str | None = "16966f28ee13"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "webhook_subscriptions",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column(
            "event_types",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
            comment="Event type names, or ['*']",
        ),
        sa.Column(
            "unit_id", sa.String(length=64), nullable=True, comment="Unit filter: that unit and those below"
        ),
        sa.Column("district_id", sa.String(length=12), nullable=True, comment="The unit's district (scope)"),
        sa.Column("description", sa.String(length=500), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("disabled_reason", sa.String(length=500), nullable=True),
        sa.Column("disabled_at", app.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("owner_key_id", sa.String(length=40), nullable=False, comment="The key that created it"),
        sa.Column("after_position", sa.BigInteger(), nullable=False, comment="Events after this position"),
        sa.Column("secret", sa.String(length=120), nullable=False, comment="whsec_…; not in the event log"),
        sa.Column("previous_secret", sa.String(length=120), nullable=True),
        sa.Column("previous_secret_expires_at", app.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column(
            "failing_since",
            app.core.db.UTCDateTime(timezone=True),
            nullable=True,
            comment="First failure since the last success",
        ),
        sa.Column("created_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False, comment="Version of the webhook-<id> stream"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_subscriptions")),
    )
    op.create_index(
        "ix_webhook_subscriptions_created_at_id", "webhook_subscriptions", ["created_at", "id"], unique=False
    )
    op.create_index("ix_webhook_subscriptions_unit_id", "webhook_subscriptions", ["unit_id"], unique=False)
    op.create_table(
        "webhook_deliveries",
        sa.Column(
            "id", sa.String(length=40), nullable=False, comment="The webhook-id header, stable across retries"
        ),
        sa.Column("subscription_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False, comment="event, ping or notice (log only)"),
        sa.Column("event_type", sa.String(length=100), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=True),
        sa.Column("position", sa.BigInteger(), nullable=True),
        sa.Column("problem_id", sa.String(length=36), nullable=True),
        sa.Column("body", sa.Text(), nullable=False, comment="The exact bytes sent (UTF-8)"),
        sa.Column(
            "status", sa.String(length=10), nullable=False, comment="pending, delivered, failed or notice"
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column(
            "round_start", sa.Integer(), nullable=False, comment="Attempts before this round of retries"
        ),
        sa.Column("next_attempt_at", app.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_attempt_at", app.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", app.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_status_code", sa.SmallInteger(), nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column(
            "requested_by", sa.String(length=40), nullable=True, comment="Pings and manual retries: the key"
        ),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["webhook_subscriptions.id"],
            name=op.f("fk_webhook_deliveries_subscription_id_webhook_subscriptions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
    )
    op.create_index(
        "ix_webhook_deliveries_due",
        "webhook_deliveries",
        ["next_attempt_at"],
        unique=False,
        sqlite_where=sa.text("status = 'pending'"),
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "ix_webhook_deliveries_subscription_id_created_at_id",
        "webhook_deliveries",
        ["subscription_id", "created_at", "id"],
        unique=False,
    )
    op.create_table(
        "webhook_attempts",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("delivery_id", sa.String(length=40), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("attempted_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("status_code", sa.SmallInteger(), nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column("response", sa.Text(), nullable=True, comment="The start of the response body"),
        sa.Column("error", sa.String(length=500), nullable=True),
        sa.Column(
            "outcome", sa.String(length=10), nullable=False, comment="delivered, retry, failed or gone"
        ),
        sa.Column("next_retry_at", app.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("sender", sa.String(length=100), nullable=False, comment="host:pid of the sending process"),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["webhook_deliveries.id"],
            name=op.f("fk_webhook_attempts_delivery_id_webhook_deliveries"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_attempts")),
    )
    op.create_index(
        "ix_webhook_attempts_delivery_id_id", "webhook_attempts", ["delivery_id", "id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_webhook_attempts_delivery_id_id", table_name="webhook_attempts")
    op.drop_table("webhook_attempts")
    op.drop_index("ix_webhook_deliveries_subscription_id_created_at_id", table_name="webhook_deliveries")
    op.drop_index(
        "ix_webhook_deliveries_due",
        table_name="webhook_deliveries",
        sqlite_where=sa.text("status = 'pending'"),
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.drop_table("webhook_deliveries")
    op.drop_index("ix_webhook_subscriptions_unit_id", table_name="webhook_subscriptions")
    op.drop_index("ix_webhook_subscriptions_created_at_id", table_name="webhook_subscriptions")
    op.drop_table("webhook_subscriptions")
