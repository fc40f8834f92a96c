"""Databases of their own for tests that run real server processes for a while (fuzzing, crashes,
backups): a fresh SQLite file or a fresh PostgreSQL database on the suite's server, dropped at the
end. The shared per-run test database is truncated between tests, which a server still writing in
the background must never see."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.engine import make_url

from tests.conftest import _admin_execute, _admin_pg_url, pg_available

BACKENDS = ["sqlite", "postgresql"]


@contextmanager
def fresh_database(backend: str, folder: Path, name: str = "db") -> Iterator[str]:
    """The URL of an empty (unmigrated) database of `backend`; servers migrate it on start."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{folder / (name + '.db')}"
        return
    assert pg_available(), "PostgreSQL is not reachable"
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    database = f"dr_rel_{name}_{worker}_{os.getpid()}_{secrets.token_hex(3)}"
    admin = _admin_pg_url()
    asyncio.run(_admin_execute(f'CREATE DATABASE "{database}"'))
    try:
        yield str(make_url(admin).set(database=database)).replace("***", make_url(admin).password or "")
    finally:
        asyncio.run(_admin_execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
