"""Applying migrations from the service and the CLI (`dispatchroom migrate`, `serve`)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection

import app as app_package
from app.core.db import Database


def alembic_config() -> Config:
    package = Path(app_package.__file__).resolve().parent
    for script_dir in (package.parent / "alembic", package / "_alembic"):
        if (script_dir / "env.py").exists():
            cfg = Config()
            cfg.set_main_option("script_location", str(script_dir))
            cfg.set_main_option(
                "file_template",
                "%%(year)d_%%(month).2d_%%(day).2d_%%(hour).2d%%(minute).2d-%%(rev)s_%%(slug)s",
            )
            return cfg
    raise FileNotFoundError("the alembic migrations are not installed next to the app package")


def _upgrade(connection: Connection, revision: str) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, revision)


async def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at `url` to `revision` (default: the latest)."""
    db = Database(url, pool_size=1, max_overflow=0)
    try:
        async with db.engine.connect() as conn:
            await conn.run_sync(_upgrade, revision)
            await conn.commit()
    finally:
        await db.dispose()
