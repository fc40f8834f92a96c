"""Problem location and media: where a problem is (Open311's address and coordinates) and a
photo or document of it, on the problem view. Both nullable: existing rows need nothing.

Revision ID: f85896adc615
Revises: 9aa688ab587d
Create Date: 2026-11-21 17:02:21.360436
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import app.core.db  # noqa: F401  (custom column types)

revision: str = "f85896adc615"
down_revision: str | None = "9aa688ab587d"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "problem_view",
        sa.Column(
            "location",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
            comment="address, address_id, zipcode, lat, long",
        ),
    )
    op.add_column("problem_view", sa.Column("media_url", sa.String(length=1000), nullable=True))


def downgrade() -> None:
    op.drop_column("problem_view", "media_url")
    op.drop_column("problem_view", "location")
