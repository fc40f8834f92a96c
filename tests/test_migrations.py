"""Migrations and models agree: autogenerate finds nothing to do on either backend, and the
migrations run down and up again."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection

import app.tables  # noqa: F401  (every table on the metadata)
from app.core.db import Database, metadata
from app.migrate import compare_type, downgrade, upgrade


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": compare_type})
    return list(compare_metadata(context, metadata))


async def _inspect(url: str) -> tuple[list[Any], set[str]]:
    db = Database(url)
    try:
        async with db.read() as conn:
            diff = await conn.run_sync(_diff)
            tables = set(await conn.run_sync(lambda c: c.dialect.get_table_names(c)))
    finally:
        await db.dispose()
    return diff, tables


async def test_no_drift_between_models_and_migrations(db_url: str) -> None:
    diff, tables = await _inspect(db_url)
    assert diff == []
    assert {t.name for t in metadata.sorted_tables} <= tables


async def test_downgrade_and_upgrade_again(db_url: str) -> None:
    await downgrade(db_url, "base")
    _, tables = await _inspect(db_url)
    assert tables <= {"alembic_version", "sqlite_sequence"}
    await upgrade(db_url)
    diff, _ = await _inspect(db_url)
    assert diff == []
