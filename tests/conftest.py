"""Test fixtures: real databases, the real application, real HTTP.

Backend-dependent tests take the `db_url` fixture (directly or through `app`/`client`) and run
once on SQLite and once on PostgreSQL. Every test run creates its own PostgreSQL database
(migrated once, truncated between tests) and its own SQLite files, so runs never see each
other's data. Without a reachable PostgreSQL the PostgreSQL half is skipped with one line
saying so, except with CI=true, where that is an error.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from app.core.clock import ManualClock
from app.core.db import Database, metadata
from app.core.settings import Settings
from app.main import Services, create_app
from app.migrate import upgrade

ADMIN_KEY = "dr_test_admin_" + "k" * 24
DEFAULT_PG = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
# Monday 16 November 2026, 09:00 in Changchun: a plain working week.
T0 = datetime(2026, 11, 16, 1, 0, tzinfo=UTC)

_pg_state: dict[str, Any] = {"checked": False, "url": None, "reason": None}


def _admin_pg_url() -> str:
    return os.environ.get("TEST_DATABASE_URL", DEFAULT_PG)


def _asyncpg_dsn(url: str) -> str:
    u = make_url(url)
    return str(u.set(drivername="postgresql")).replace("***", u.password or "")


async def _probe_pg(url: str) -> str | None:
    try:
        conn = await asyncpg.connect(_asyncpg_dsn(url), timeout=5)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    await conn.close()
    return None


def pytest_configure(config: pytest.Config) -> None:
    reason = asyncio.run(_probe_pg(_admin_pg_url()))
    _pg_state["checked"] = True
    _pg_state["reason"] = reason
    if reason and os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        raise pytest.UsageError(f"CI=true but PostgreSQL is not reachable at {_admin_pg_url()} ({reason})")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A PostgreSQL-only test has no SQLite variant (a SQLite-only one no PostgreSQL variant);
    without a reachable PostgreSQL (outside CI) the PostgreSQL variants are deselected, and the
    header and summary say so once."""
    keep, dropped = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        backend = callspec.params.get("db_url") if callspec else None
        if item.get_closest_marker("postgres_only") and backend == "sqlite":
            continue
        if item.get_closest_marker("sqlite_only") and backend == "postgresql":
            continue
        if backend == "postgresql" and not pg_available():
            dropped.append(item)
            continue
        keep.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = keep


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _pg_state["reason"]:
        terminalreporter.write_line(
            f"PostgreSQL NOT reachable at {_admin_pg_url()}: the PostgreSQL half of the suite did not run",
            yellow=True,
        )


def pytest_report_header(config: pytest.Config) -> str:
    if _pg_state["reason"]:
        return (
            f"PostgreSQL NOT reachable at {_admin_pg_url()} ({_pg_state['reason']}): "
            "the PostgreSQL half of the suite is SKIPPED"
        )
    return f"PostgreSQL: {_admin_pg_url()} (a fresh database per test run)"


def pg_available() -> bool:
    return _pg_state["reason"] is None


# -- databases ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tmp_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dispatchroom")


# Database set-up runs outside the tests' event loop (in its own short-lived loop).


@pytest.fixture(scope="session")
def sqlite_template(tmp_root: Path) -> Path:
    path = tmp_root / "template.db"
    asyncio.run(upgrade(f"sqlite+aiosqlite:///{path}"))
    return path


async def _admin_execute(sql: str) -> None:
    conn = await asyncpg.connect(_asyncpg_dsn(_admin_pg_url()))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    if not pg_available():
        pytest.skip(f"PostgreSQL not reachable: {_pg_state['reason']}")
    admin = _admin_pg_url()
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    name = f"dr_test_{worker}_{os.getpid()}_{secrets.token_hex(3)}"
    asyncio.run(_admin_execute(f'CREATE DATABASE "{name}"'))
    url = str(make_url(admin).set(database=name)).replace("***", make_url(admin).password or "")
    asyncio.run(upgrade(url))
    yield url
    asyncio.run(_admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def reset_postgres(url: str) -> None:
    tables = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
    conn = await asyncpg.connect(_asyncpg_dsn(url))
    try:
        # A connection leaked by an earlier test (say, a task cancelled mid-read) must not hold a
        # lock over the next one: end every other session of this test database first.
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        await conn.execute("SET lock_timeout = '20s'")
        await conn.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
        await conn.execute(
            "INSERT INTO event_sequencer (id, last_tx, last_row, last_position) VALUES (1, '0', 0, 0)"
        )
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database of each backend."""
    if request.param == "sqlite":
        template = request.getfixturevalue("sqlite_template")
        path = tmp_path / "dispatchroom.db"
        shutil.copyfile(template, path)
        return f"sqlite+aiosqlite:///{path}"
    url: str = request.getfixturevalue("pg_database")
    asyncio.run(reset_postgres(url))
    return url


@pytest.fixture
async def database(db_url: str) -> AsyncIterator[Database]:
    db = Database(db_url, pool_size=20, max_overflow=20)
    yield db
    await db.dispose()


# -- the application ---------------------------------------------------------------------------


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(
        database_url=db_url,
        environment="test",
        admin_api_key=ADMIN_KEY,  # type: ignore[arg-type]
        sequencer_poll_ms=5,
        scheduler_interval_seconds=0,  # tests run the automatic actions with `scheduler.tick()`
        prepare_periods_seconds=0,  # and prepare closed periods with `rankings.prepare_closed()`
        db_pool_size=20,
        db_max_overflow=20,
    )


@pytest.fixture
async def app(settings: Settings, clock: ManualClock) -> AsyncIterator[Any]:
    application = create_app(settings, clock=clock)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
def services(app: Any) -> Services:
    """The running application's services, for arranging test data."""
    svc: Services = app.state.services
    return svc


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://testserver",
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    ) as c:
        yield c


# -- helpers -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
