"""Alembic environment: runs against a connection handed in by `app.migrate` (the service and
the CLI) or, from the `alembic` command line, against DATABASE_URL."""

import asyncio
import os

from alembic import context
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

import app.tables  # noqa: F401  (registers every table on the metadata)
from app.core.db import metadata
from app.migrate import compare_type

config = context.config
target_metadata = metadata
MIGRATION_LOCK = 727_001  # pg_advisory_xact_lock key: one migrating process at a time


def do_run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=compare_type,
        transaction_per_migration=False,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        do_run_migrations(connection)
        return
    from app.core.db import Database
    from app.core.settings import DEFAULT_DATABASE_URL

    url = os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL)

    async def run() -> None:
        db = Database(url, pool_size=1)
        engine: AsyncEngine = db.engine
        async with engine.connect() as conn:
            await conn.run_sync(do_run_migrations)
            await conn.commit()
        await engine.dispose()

    asyncio.run(run())


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run against a database")
run_migrations_online()
