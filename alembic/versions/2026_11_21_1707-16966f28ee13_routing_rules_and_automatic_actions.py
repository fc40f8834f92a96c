"""Routing rules and calendar overrides as data; what the scheduler needs of the problem view.

- `routing_rules`: one row per version of the rule set (read model of `routing-rules`);
- `calendar_overrides`: admin overrides of the work calendar (read model of `calendar-overrides`);
- `problem_view`: what the enterprise is told (`status_note`), the flags for the commander
  (`returned_too_often`, `needs_attention`, with a partial index of the flagged rows) and the
  scheduler's work lists (`pending_*`: set only while a
  problem may still need that automatic action, each with an index of the rows where it is set).

Revision ID: 16966f28ee13
Revises: f85896adc615
Create Date: 2026-11-21 17:07:08.273573
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import app.core.db  # noqa: F401  (custom column types)

revision: str = "16966f28ee13"
down_revision: str | None = "f85896adc615"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
INSTANT = app.core.db.UTCDateTime(timezone=True)
PENDING = {
    "pending_overdue": (INSTANT, "Deadline not yet marked overdue"),
    "pending_reminder": (INSTANT, "Deadline not yet reminded of"),
    "pending_review": (sa.Date(), "Review date not yet reminded of"),
    "pending_close": (INSTANT, "Resolved, awaiting feedback, since"),
}


def upgrade() -> None:
    op.create_table(
        "calendar_overrides",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("working", sa.Boolean(), nullable=False),
        sa.Column("note", sa.String(length=500), nullable=False),
        sa.Column("updated_at", INSTANT, nullable=False),
        sa.Column("updated_by", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("day", name=op.f("pk_calendar_overrides")),
    )
    op.create_table(
        "routing_rules",
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("rules", JSON, nullable=False),
        sa.Column("changes", JSON, nullable=False, comment="What changed from the previous version"),
        sa.Column("note", sa.String(length=500), nullable=True),
        sa.Column("changed_at", INSTANT, nullable=False),
        sa.Column("changed_by", sa.String(length=64), nullable=False),
        sa.Column("changed_by_name", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_routing_rules")),
    )
    with op.batch_alter_table("problem_view") as batch:
        batch.add_column(
            sa.Column("returned_too_often", sa.Boolean(), server_default=sa.text("false"), nullable=False)
        )
        batch.add_column(
            sa.Column("status_note", sa.Text(), nullable=True, comment="What the enterprise is told")
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
        for column, (type_, comment) in PENDING.items():
            batch.add_column(sa.Column(column, type_, nullable=True, comment=comment))
    op.create_index(
        "ix_problem_view_needs_attention",
        "problem_view",
        ["submitted_at", "id"],
        unique=False,
        sqlite_where=sa.text("needs_attention"),
        postgresql_where=sa.text("needs_attention"),
    )
    for column in PENDING:
        where = sa.text(f"{column} IS NOT NULL")
        op.create_index(
            f"ix_problem_view_{column}",
            "problem_view",
            [column, "id"],
            unique=False,
            sqlite_where=where,
            postgresql_where=where,
        )
    # Problems recorded before this revision: what they may still need. (Nothing was ever marked
    # overdue or reminded of before, and no rule routed them; the flags start false.)
    op.execute(
        "UPDATE problem_view SET pending_overdue = deadline, pending_reminder = deadline "
        "WHERE status IN ('open', 'assigned', 'in_progress', 'deferred')"
    )
    op.execute("UPDATE problem_view SET pending_review = review_on WHERE status = 'deferred'")
    op.execute("UPDATE problem_view SET pending_close = resolved_at WHERE status = 'resolved'")


def downgrade() -> None:
    for column in PENDING:
        op.drop_index(f"ix_problem_view_{column}", table_name="problem_view")
    op.drop_index("ix_problem_view_needs_attention", table_name="problem_view")
    with op.batch_alter_table("problem_view") as batch:
        for column in reversed(PENDING):
            batch.drop_column(column)
        batch.drop_column("needs_attention")
        batch.drop_column("status_note")
        batch.drop_column("returned_too_often")
    op.drop_table("routing_rules")
    op.drop_table("calendar_overrides")
