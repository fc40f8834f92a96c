"""Foundation: the event log, reference data, API keys, the problem view.

Revision ID: 6c69f3a8830d
Revises:
Create Date: 2026-11-21 16:10:10.250376
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from app.core.db import XID8, UTCDateTime

revision: str = "6c69f3a8830d"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("unit_id", sa.String(length=64), nullable=True),
        sa.Column("district_id", sa.String(length=12), nullable=True),
        sa.Column("source", sa.String(length=64), nullable=True),
        sa.Column(
            "permissions",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("key_hint", sa.String(length=16), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=True),
        sa.Column("revoked_at", UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    op.create_table(
        "categories",
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_categories")),
    )
    op.create_table(
        "event_sequencer",
        sa.Column("id", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("last_tx", sa.BigInteger().with_variant(XID8(), "postgresql"), nullable=False),
        sa.Column("last_row", sa.BigInteger(), nullable=False),
        sa.Column("last_position", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event_sequencer")),
    )
    op.create_table(
        "events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
            comment="Insertion number (internal; not the global position)",
        ),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("stream_id", sa.String(length=200), nullable=False),
        sa.Column("stream_version", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(length=100), nullable=False),
        sa.Column("schema_version", sa.SmallInteger(), nullable=False),
        sa.Column(
            "data",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "metadata",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("occurred_at", UTCDateTime(timezone=True), nullable=False, comment="Business time"),
        sa.Column("recorded_at", UTCDateTime(timezone=True), nullable=False, comment="Server time"),
        sa.Column(
            "tx_id",
            sa.BigInteger().with_variant(XID8(), "postgresql"),
            nullable=True,
            comment="Writing transaction (PostgreSQL)",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
        sa.UniqueConstraint("event_id", name=op.f("uq_events_event_id")),
        sa.UniqueConstraint("stream_id", "stream_version", name=op.f("uq_events_stream_id_stream_version")),
    )
    op.create_index("ix_events_tx_id_id", "events", ["tx_id", "id"], unique=False)
    op.create_table(
        "problem_units",
        sa.Column("problem_id", sa.String(length=36), nullable=False),
        sa.Column("unit_id", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("problem_id", "unit_id", name=op.f("pk_problem_units")),
    )
    op.create_index(
        "ix_problem_units_unit_id_problem_id",
        "problem_units",
        ["unit_id", "problem_id"],
        unique=False,
    )
    op.create_table(
        "problem_view",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("enterprise_id", sa.String(length=18), nullable=False),
        sa.Column("enterprise_name", sa.String(length=200), nullable=False),
        sa.Column("district_id", sa.String(length=12), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("urgency", sa.String(length=10), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=True),
        sa.Column("reported_by", sa.String(length=200), nullable=True),
        sa.Column("reporter_unit_id", sa.String(length=64), nullable=False),
        sa.Column("submitted_by", sa.String(length=40), nullable=True),
        sa.Column("tier", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("room_unit_id", sa.String(length=64), nullable=True),
        sa.Column("lead_unit_id", sa.String(length=64), nullable=True),
        sa.Column("holder_unit_id", sa.String(length=64), nullable=True),
        sa.Column(
            "cooperating_unit_ids",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("deadline", UTCDateTime(timezone=True), nullable=True),
        sa.Column("review_on", sa.Date(), nullable=True),
        sa.Column("submitted_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("tier_entered_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("holder_since", UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("accepted_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("resolved_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("closed_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("withdrawn_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("solved_tier", sa.String(length=16), nullable=True),
        sa.Column("solved_by_unit_id", sa.String(length=64), nullable=True),
        sa.Column("resolution", sa.Text(), nullable=True),
        sa.Column("escalations", sa.Integer(), nullable=False),
        sa.Column("returns", sa.Integer(), nullable=False),
        sa.Column("supervisions", sa.Integer(), nullable=False),
        sa.Column("reminders", sa.Integer(), nullable=False),
        sa.Column("reopens", sa.Integer(), nullable=False),
        sa.Column(
            "extension_request",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "return_request",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("feedback_score", sa.SmallInteger(), nullable=True),
        sa.Column("satisfied", sa.Boolean(), nullable=True),
        sa.Column("rule_version", sa.Integer(), nullable=True),
        sa.Column("unrouted", sa.Boolean(), nullable=False),
        sa.Column("paused_seconds", sa.Integer(), nullable=False),
        sa.Column("last_event", sa.String(length=60), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_problem_view")),
    )
    op.create_index(
        "ix_problem_view_district_id_status",
        "problem_view",
        ["district_id", "status"],
        unique=False,
    )
    op.create_index("ix_problem_view_enterprise_id", "problem_view", ["enterprise_id"], unique=False)
    op.create_index("ix_problem_view_holder_unit_id", "problem_view", ["holder_unit_id"], unique=False)
    op.create_index("ix_problem_view_lead_unit_id", "problem_view", ["lead_unit_id"], unique=False)
    op.create_index("ix_problem_view_source", "problem_view", ["source"], unique=False)
    op.create_index("ix_problem_view_status_deadline", "problem_view", ["status", "deadline"], unique=False)
    op.create_index("ix_problem_view_submitted_at_id", "problem_view", ["submitted_at", "id"], unique=False)
    op.create_table(
        "units",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("tier", sa.String(length=16), nullable=False),
        sa.Column("parent_id", sa.String(length=64), nullable=True),
        sa.Column("district_id", sa.String(length=12), nullable=True),
        sa.Column(
            "path",
            sa.String(length=1000),
            nullable=False,
            comment="Ids from the root, '/'-separated",
        ),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["parent_id"], ["units.id"], name=op.f("fk_units_parent_id_units")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_units")),
    )
    op.create_index("ix_units_district_id_kind", "units", ["district_id", "kind"], unique=False)
    op.create_index("ix_units_parent_id", "units", ["parent_id"], unique=False)
    op.create_index(
        "ix_units_path",
        "units",
        ["path"],
        unique=False,
        postgresql_ops={"path": "varchar_pattern_ops"},
    )
    op.create_index(
        "uq_units_command_room",
        "units",
        ["kind"],
        unique=True,
        sqlite_where=sa.text("kind = 'city_command_room'"),
        postgresql_where=sa.text("kind = 'city_command_room'"),
    )
    op.create_index(
        "uq_units_district_room",
        "units",
        ["district_id"],
        unique=True,
        sqlite_where=sa.text("kind = 'district_dispatch_room'"),
        postgresql_where=sa.text("kind = 'district_dispatch_room'"),
    )
    op.create_table(
        "enterprises",
        sa.Column("id", sa.String(length=18), nullable=False, comment="Unified social credit code"),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("district_id", sa.String(length=12), nullable=False),
        sa.Column("service_unit_id", sa.String(length=64), nullable=False),
        sa.Column("address", sa.String(length=500), nullable=False),
        sa.Column(
            "contact",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["service_unit_id"], ["units.id"], name=op.f("fk_enterprises_service_unit_id_units")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_enterprises")),
    )
    op.create_index("ix_enterprises_district_id_id", "enterprises", ["district_id", "id"], unique=False)
    op.create_index("ix_enterprises_service_unit_id", "enterprises", ["service_unit_id"], unique=False)
    op.create_table(
        "event_positions",
        sa.Column("position", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("event_row", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("type", sa.String(length=100), nullable=False),
        sa.ForeignKeyConstraint(
            ["event_row"], ["events.id"], name=op.f("fk_event_positions_event_row_events")
        ),
        sa.PrimaryKeyConstraint("position", name=op.f("pk_event_positions")),
        sa.UniqueConstraint("event_row", name=op.f("uq_event_positions_event_row")),
    )
    op.create_index("ix_event_positions_type_position", "event_positions", ["type", "position"], unique=False)

    # The sequencer starts before every transaction id.
    if op.get_bind().dialect.name == "postgresql":
        op.execute("INSERT INTO event_sequencer (id, last_tx, last_row, last_position) VALUES (1, '0', 0, 0)")
    else:
        op.execute("INSERT INTO event_sequencer (id, last_tx, last_row, last_position) VALUES (1, 0, 0, 0)")

    # The log is append-only: the database itself refuses to change or delete an event.
    for table in ("events", "event_positions"):
        if op.get_bind().dialect.name == "postgresql":
            op.execute(
                "CREATE OR REPLACE FUNCTION dispatchroom_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
                "BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END $$"
            )
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION dispatchroom_append_only()"
            )
        else:
            for action in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
                )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS events_append_only ON events")
        op.execute("DROP TRIGGER IF EXISTS event_positions_append_only ON event_positions")
        op.execute("DROP FUNCTION IF EXISTS dispatchroom_append_only()")
    op.drop_index("ix_event_positions_type_position", table_name="event_positions")
    op.drop_table("event_positions")
    op.drop_index("ix_enterprises_service_unit_id", table_name="enterprises")
    op.drop_index("ix_enterprises_district_id_id", table_name="enterprises")
    op.drop_table("enterprises")
    op.drop_index(
        "uq_units_district_room",
        table_name="units",
        sqlite_where=sa.text("kind = 'district_dispatch_room'"),
        postgresql_where=sa.text("kind = 'district_dispatch_room'"),
    )
    op.drop_index(
        "uq_units_command_room",
        table_name="units",
        sqlite_where=sa.text("kind = 'city_command_room'"),
        postgresql_where=sa.text("kind = 'city_command_room'"),
    )
    op.drop_index("ix_units_path", table_name="units")
    op.drop_index("ix_units_parent_id", table_name="units")
    op.drop_index("ix_units_district_id_kind", table_name="units")
    op.drop_table("units")
    op.drop_index("ix_problem_view_submitted_at_id", table_name="problem_view")
    op.drop_index("ix_problem_view_status_deadline", table_name="problem_view")
    op.drop_index("ix_problem_view_source", table_name="problem_view")
    op.drop_index("ix_problem_view_lead_unit_id", table_name="problem_view")
    op.drop_index("ix_problem_view_holder_unit_id", table_name="problem_view")
    op.drop_index("ix_problem_view_enterprise_id", table_name="problem_view")
    op.drop_index("ix_problem_view_district_id_status", table_name="problem_view")
    op.drop_table("problem_view")
    op.drop_index("ix_problem_units_unit_id_problem_id", table_name="problem_units")
    op.drop_table("problem_units")
    op.drop_index("ix_events_tx_id_id", table_name="events")
    op.drop_table("events")
    op.drop_table("event_sequencer")
    op.drop_table("categories")
    op.drop_table("api_keys")
