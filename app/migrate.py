"""Applying migrations from the service and the CLI (`dispatchroom migrate`, `serve`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection

import app as app_package
from app.core.db import XID8, Database


def compare_type(
    ctx: Any, inspected: Any, metadata_column: Any, inspected_type: Any, metadata_type: Any
) -> bool | None:
    """Alembic type comparison: xid8 columns (PostgreSQL) are ours and compare by name."""
    variants = getattr(metadata_type, "mapping", {}) or {}
    if isinstance(variants.get("postgresql"), XID8) or isinstance(inspected_type, XID8):
        return False
    return None


def alembic_config() -> Config:
    package = Path(app_package.__file__).resolve().parent
    for script_dir in (package.parent / "alembic", package / "_alembic"):
        if (script_dir / "env.py").exists():
            cfg = Config()
            cfg.set_main_option("script_location", str(script_dir))
            return cfg
    raise FileNotFoundError("the alembic migrations are not installed next to the app package")


async def _run(url: str, action: Callable[[Config, str], None], revision: str) -> None:
    def run(connection: Connection) -> None:
        cfg = alembic_config()
        cfg.attributes["connection"] = connection
        action(cfg, revision)

    db = Database(url, pool_size=1, max_overflow=0)
    try:
        async with db.engine.connect() as conn:
            await conn.run_sync(run)
            await conn.commit()
    finally:
        await db.dispose()


async def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at `url` up to `revision` (default: the latest)."""
    await _run(url, command.upgrade, revision)


async def downgrade(url: str, revision: str) -> None:
    await _run(url, command.downgrade, revision)
