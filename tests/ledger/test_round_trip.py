"""`dispatchroom export` then `dispatchroom import` into an empty database (real processes, on
SQLite and PostgreSQL) reproduces the problems; a second import creates nothing; a bad row gives
exit status 1 and an error report with its row number."""

from __future__ import annotations

import asyncio
import csv
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from app.core.clock import ManualClock
from app.core.db import Database
from app.core.settings import Settings
from app.main import Services
from app.migrate import upgrade
from app.projections.problem_view import problem_view
from tests.conftest import T0, _admin_execute, _admin_pg_url
from tests.factories import D1, D2, build_city, command, submit
from tests.ledger.test_ledger_api import as_csv, ledger_rows
from tests.server import dispatchroom

COMPARED = (
    "id",
    "enterprise_id",
    "category",
    "title",
    "description",
    "urgency",
    "source",
    "reported_by",
    "reporter_unit_id",
    "tier",
    "status",
    "lead_unit_id",
    "cooperating_unit_ids",
    "holder_unit_id",
    "room_unit_id",
    "deadline",
    "submitted_at",
    "resolved_at",
    "closed_at",
    "withdrawn_at",
    "solved_tier",
    "feedback_score",
    "satisfied",
    "location",
)


@pytest.fixture
def empty_db(db_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A second migrated database of the same backend."""
    if db_url.startswith("sqlite"):
        path = tmp_path / "second.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    name = f"dr_second_{secrets.token_hex(4)}"
    asyncio.run(_admin_execute(f'CREATE DATABASE "{name}"'))
    admin = make_url(_admin_pg_url())
    url = str(admin.set(database=name)).replace("***", admin.password or "")
    asyncio.run(upgrade(url))
    yield url
    asyncio.run(_admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def snapshot(url: str) -> dict[str, dict[str, Any]]:
    db = Database(url)
    try:
        async with db.read() as conn:
            rows = (await conn.execute(sa.select(problem_view))).all()
    finally:
        await db.dispose()
    return {r.id: {k: getattr(r, k) for k in COMPARED} for r in rows}


async def test_export_import_round_trip(
    client: httpx.AsyncClient, services: Services, db_url: str, empty_db: str, tmp_path: Path
) -> None:
    city = await build_city(services)
    # Problems with imported histories …
    imported = await client.post(
        "/v1/imports", content=as_csv(ledger_rows(city)), headers={"Content-Type": "text/csv"}
    )
    assert imported.json()["created"] == 3
    # … and live ones, each a path a ledger can tell.
    closed = (await submit(client, city.enterprise(), location={"address": "测试路 9 号"}))["id"]
    for name, body in [
        ("escalate", {"reason": "需区级协调"}),
        (
            "assign",
            {
                "lead_unit_id": city.function_groups[D1][0],
                "cooperating_unit_ids": [city.function_groups[D1][1]],
            },
        ),
        ("accept", {}),
        ("resolve", {"resolution": "已解决"}),
        ("feedback", {"score": 4, "comment": "基本满意"}),
    ]:
        await command(client, closed, name, body)
    waiting = (await submit(client, city.enterprise(D2), category="land", urgency="urgent"))["id"]
    await command(client, waiting, "escalate", {"reason": "需区级协调"})
    at_city = (await submit(client, city.enterprise(D2), category="financing"))["id"]
    await command(client, at_city, "escalate", {"reason": "区级"})
    await command(client, at_city, "escalate", {"reason": "市级"})
    await command(client, at_city, "assign", {"lead_unit_id": "cc-dept-b"})
    unhappy = (await submit(client, city.enterprise(index=1)))["id"]
    await command(client, unhappy, "accept")
    await command(client, unhappy, "resolve", {"resolution": "已处理"})
    await command(client, unhappy, "feedback", {"score": 2})
    before = await snapshot(db_url)
    assert len(before) == 8

    csv_file, xlsx_file = tmp_path / "ledger.csv", tmp_path / "ledger.xlsx"
    for out in (csv_file, xlsx_file):
        result = dispatchroom("export", "--output", str(out), env={"DATABASE_URL": db_url})
        assert result.returncode == 0, result.stdout + result.stderr
        assert "8 problems exported" in result.stdout
    with csv_file.open(encoding="utf-8-sig") as f:
        assert next(csv.reader(f))[:3] == ["台账编号", "企业统一社会信用代码", "企业名称"]

    second = Services(Settings(database_url=empty_db, environment="test"), ManualClock(T0))
    await second.bootstrap()
    await build_city(second)
    await second.db.dispose()

    first_run = dispatchroom("import", str(xlsx_file), env={"DATABASE_URL": empty_db})
    assert first_run.returncode == 0, first_run.stdout + first_run.stderr
    assert "8 rows: 8 created, 0 updated, 0 unchanged, 0 failed." in first_run.stdout
    assert await snapshot(empty_db) == before
    again = dispatchroom("import", str(csv_file), env={"DATABASE_URL": empty_db})
    assert again.returncode == 0 and "0 created, 0 updated, 8 unchanged, 0 failed" in again.stdout

    bad = tmp_path / "bad.csv"
    bad.write_bytes(as_csv(ledger_rows(city)[2:4]))
    failed = dispatchroom("import", str(bad), env={"DATABASE_URL": empty_db})
    assert failed.returncode == 1 and "2 failed" in failed.stdout
    with (tmp_path / "bad.csv.errors.csv").open(encoding="utf-8-sig") as f:
        report = list(csv.reader(f))
    assert [r[:2] for r in report[1:]] == [["2", "NG-2026-003"], ["3", "NG-2026-004"]]
    assert (
        dispatchroom("import", str(tmp_path / "ledger.txt"), env={"DATABASE_URL": empty_db}).returncode == 2
    )
