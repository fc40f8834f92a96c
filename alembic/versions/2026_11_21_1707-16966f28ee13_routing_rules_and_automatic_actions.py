"""Routing rules and calendar overrides as data; what the scheduler needs of the problem view.

- `routing_rules`: one row per version of the rule set (read model of `routing-rules`);
- `calendar_overrides`: admin overrides of the work calendar (read model of `calendar-overrides`);
- `problem_view`: the flags for the commander (`returned_too_often`, `needs_attention`), which
  deadline or review date was already marked overdue or reminded of, and partial indexes that
  hold only the rows that may still need an automatic action.

Revision ID: 16966f28ee13
Revises: 9aa688ab587d
Create Date: 2026-11-21 17:07:08.273573
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import app.core.db  # noqa: F401  (custom column types)

revision: str = "16966f28ee13"
down_revision: str | None = "9aa688ab587d"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
ACTIVE = "status IN ('open', 'assigned', 'in_progress', 'deferred')"
PARTIAL_INDEXES = {
    "ix_problem_view_overdue_pending": (
        ["deadline", "id"],
        f"{ACTIVE} AND (overdue_noted_for IS NULL OR overdue_noted_for <> deadline)",
    ),
    "ix_problem_view_reminder_pending": (
        ["deadline", "id"],
        f"{ACTIVE} AND (reminded_for IS NULL OR reminded_for <> deadline)",
    ),
    "ix_problem_view_resolved": (["resolved_at", "id"], "status = 'resolved'"),
    "ix_problem_view_deferred": (["review_on", "id"], "status = 'deferred'"),
    "ix_problem_view_needs_attention": (["submitted_at", "id"], "needs_attention"),
}


def upgrade() -> None:
    op.create_table(
        "calendar_overrides",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("working", sa.Boolean(), nullable=False),
        sa.Column("note", sa.String(length=500), nullable=False),
        sa.Column("updated_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("day", name=op.f("pk_calendar_overrides")),
    )
    op.create_table(
        "routing_rules",
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("rules", JSON, nullable=False),
        sa.Column("changes", JSON, nullable=False, comment="What changed from the previous version"),
        sa.Column("note", sa.String(length=500), nullable=True),
        sa.Column("changed_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("changed_by", sa.String(length=64), nullable=False),
        sa.Column("changed_by_name", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_routing_rules")),
    )
    with op.batch_alter_table("problem_view") as batch:
        batch.add_column(
            sa.Column("returned_too_often", sa.Boolean(), server_default=sa.text("false"), nullable=False)
        )
        batch.add_column(
            sa.Column(
                "needs_attention",
                sa.Boolean(),
                server_default=sa.text("false"),
                nullable=False,
                comment="unrouted or returned_too_often: for the commander",
            )
        )
        batch.add_column(
            sa.Column(
                "overdue_noted_for",
                app.core.db.UTCDateTime(timezone=True),
                nullable=True,
                comment="Deadline marked overdue",
            )
        )
        batch.add_column(
            sa.Column(
                "reminded_for",
                app.core.db.UTCDateTime(timezone=True),
                nullable=True,
                comment="Deadline reminded of",
            )
        )
        batch.add_column(
            sa.Column("review_reminded_on", sa.Date(), nullable=True, comment="Review date reminded of")
        )
    for name, (columns, where) in PARTIAL_INDEXES.items():
        op.create_index(
            name,
            "problem_view",
            columns,
            unique=False,
            sqlite_where=sa.text(where),
            postgresql_where=sa.text(where),
        )


def downgrade() -> None:
    for name in PARTIAL_INDEXES:
        op.drop_index(name, table_name="problem_view")
    with op.batch_alter_table("problem_view") as batch:
        batch.drop_column("review_reminded_on")
        batch.drop_column("reminded_for")
        batch.drop_column("overdue_noted_for")
        batch.drop_column("needs_attention")
        batch.drop_column("returned_too_often")
    op.drop_table("routing_rules")
    op.drop_table("calendar_overrides")
