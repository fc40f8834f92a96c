"""Read models of the reference-data streams (`unit-*`, `enterprise-*`, `category-*`,
`routing-rules`, `calendar-overrides`)."""

from __future__ import annotations

import sqlalchemy as sa

from app.core.db import JSONType, UTCDateTime, metadata

units = sa.Table(
    "units",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("tier", sa.String(16), nullable=False),
    sa.Column("parent_id", sa.String(64), sa.ForeignKey("units.id"), nullable=True),
    sa.Column("district_id", sa.String(12), nullable=True),
    sa.Column("path", sa.String(1000), nullable=False, comment="Ids from the root, '/'-separated"),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Index("ix_units_parent_id", "parent_id"),
    sa.Index("ix_units_district_id_kind", "district_id", "kind"),
    sa.Index("ix_units_path", "path", postgresql_ops={"path": "varchar_pattern_ops"}),
    # One dispatch room per district, one command room per city: enforced by the database,
    # so that two concurrent creations cannot both succeed.
    sa.Index(
        "uq_units_district_room",
        "district_id",
        unique=True,
        sqlite_where=sa.text("kind = 'district_dispatch_room'"),
        postgresql_where=sa.text("kind = 'district_dispatch_room'"),
    ),
    sa.Index(
        "uq_units_command_room",
        "kind",
        unique=True,
        sqlite_where=sa.text("kind = 'city_command_room'"),
        postgresql_where=sa.text("kind = 'city_command_room'"),
    ),
)

enterprises = sa.Table(
    "enterprises",
    metadata,
    sa.Column("id", sa.String(18), primary_key=True, comment="Unified social credit code"),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("district_id", sa.String(12), nullable=False),
    sa.Column("service_unit_id", sa.String(64), sa.ForeignKey("units.id"), nullable=False),
    sa.Column("address", sa.String(500), nullable=False),
    sa.Column("contact", JSONType, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Index("ix_enterprises_district_id_id", "district_id", "id"),
    sa.Index("ix_enterprises_service_unit_id", "service_unit_id"),
)

categories = sa.Table(
    "categories",
    metadata,
    sa.Column("code", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("description", sa.String(500), nullable=False),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
)

# One row per version of the routing rule set (the `routing-rules` stream): the current rules are
# the highest version, and the rows are the history of who changed what.
routing_rules = sa.Table(
    "routing_rules",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("rules", JSONType, nullable=False),
    sa.Column("changes", JSONType, nullable=False, comment="What changed from the previous version"),
    sa.Column("note", sa.String(500), nullable=True),
    sa.Column("changed_at", UTCDateTime, nullable=False),
    sa.Column("changed_by", sa.String(64), nullable=False),
    sa.Column("changed_by_name", sa.String(200), nullable=True),
)

# The admin overrides of the work calendar (the `calendar-overrides` stream): extra holidays
# (working = false) and extra working days (working = true).
calendar_overrides = sa.Table(
    "calendar_overrides",
    metadata,
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("working", sa.Boolean, nullable=False),
    sa.Column("note", sa.String(500), nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("updated_by", sa.String(64), nullable=False),
)
