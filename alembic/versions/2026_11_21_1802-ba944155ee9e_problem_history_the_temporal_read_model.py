"""Problem history: the temporal read model (one row per problem per interval of its tracked
state, with valid_from and valid_to), kept by the `problem_history` follower. It starts empty: the
follower backfills it from position 0 when the service starts (or run
`dispatchroom projections rebuild problem_history`, faster on a large log).

Revision ID: ba944155ee9e
Revises: c8048ce0cb66
Create Date: 2026-11-21 18:02:28.168881
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.core.db  # noqa: F401  (custom column types: app.core.db.UTCDateTime …)

revision: str = "ba944155ee9e"
down_revision: str | None = "c8048ce0cb66"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "problem_history",
        sa.Column("problem_id", sa.String(length=36), nullable=False),
        sa.Column("valid_from", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("valid_to", app.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("submitted_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("district_id", sa.String(length=12), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=True),
        sa.Column("from_tier", sa.String(length=16), nullable=True),
        sa.Column("from_status", sa.String(length=16), nullable=True),
        sa.Column("tier", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("holder_unit_id", sa.String(length=64), nullable=True),
        sa.Column("lead_unit_id", sa.String(length=64), nullable=True),
        sa.Column("cooperators", sa.Integer(), nullable=False),
        sa.Column("deadline", app.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("resolved_at", app.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("solved_tier", sa.String(length=16), nullable=True),
        sa.Column("solved_by_unit_id", sa.String(length=64), nullable=True),
        sa.Column("escalations", sa.Integer(), nullable=False),
        sa.Column("returns", sa.Integer(), nullable=False),
        sa.Column("reopens", sa.Integer(), nullable=False),
        sa.Column("feedback_score", sa.SmallInteger(), nullable=True),
        sa.Column("satisfied", sa.Boolean(), nullable=True),
        sa.Column(
            "assigned_at",
            app.core.db.UTCDateTime(timezone=True),
            nullable=True,
            comment="Start of the lead unit's assignment",
        ),
        sa.Column(
            "responded_at",
            app.core.db.UTCDateTime(timezone=True),
            nullable=True,
            comment="First accept/defer/resolve after it",
        ),
        sa.Column(
            "response_days",
            sa.SmallInteger(),
            nullable=True,
            comment="Working days from assignment to response (0: the same day)",
        ),
        sa.PrimaryKeyConstraint("problem_id", "valid_from", name=op.f("pk_problem_history")),
    )
    op.create_index(
        "ix_problem_history_current",
        "problem_history",
        ["district_id", "submitted_at"],
        unique=False,
        postgresql_where=sa.text("valid_to IS NULL"),
        postgresql_include=[
            "category",
            "source",
            "tier",
            "status",
            "holder_unit_id",
            "lead_unit_id",
            "cooperators",
            "deadline",
            "resolved_at",
            "solved_tier",
            "solved_by_unit_id",
            "escalations",
            "returns",
            "reopens",
            "feedback_score",
            "satisfied",
            "assigned_at",
            "responded_at",
            "response_days",
        ],
        sqlite_where=sa.text("valid_to IS NULL"),
    )
    op.create_index(
        "ix_problem_history_submitted_at",
        "problem_history",
        ["submitted_at"],
        unique=False,
        postgresql_include=[
            "problem_id",
            "valid_from",
            "valid_to",
            "district_id",
            "category",
            "source",
            "tier",
            "status",
            "holder_unit_id",
            "lead_unit_id",
            "cooperators",
            "deadline",
            "resolved_at",
            "solved_tier",
            "solved_by_unit_id",
            "escalations",
            "returns",
            "reopens",
            "feedback_score",
            "satisfied",
            "assigned_at",
            "responded_at",
            "response_days",
        ],
    )
    op.create_index(
        "ix_problem_history_valid_from",
        "problem_history",
        ["valid_from"],
        unique=False,
        postgresql_include=[
            "problem_id",
            "district_id",
            "source",
            "from_tier",
            "tier",
            "from_status",
            "status",
        ],
    )


def downgrade() -> None:
    op.drop_index("ix_problem_history_valid_from", table_name="problem_history")
    op.drop_index("ix_problem_history_submitted_at", table_name="problem_history")
    op.drop_index("ix_problem_history_current", table_name="problem_history")
    op.drop_table("problem_history")
