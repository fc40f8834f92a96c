"""Follower checkpoints: where each background consumer of the feed has got to.

Revision ID: 9aa688ab587d
Revises: 6c69f3a8830d
Create Date: 2026-11-21 16:53:50.454105
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.core.db  # noqa: F401  (custom column types)

revision: str = "9aa688ab587d"
down_revision: str | None = "6c69f3a8830d"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "checkpoints",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_checkpoints")),
    )


def downgrade() -> None:
    op.drop_table("checkpoints")
