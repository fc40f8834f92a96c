"""A real server process SIGKILLed under write load, on SQLite and PostgreSQL. After a restart:
every request that was acknowledged (2xx) is there, nothing half-written is visible (each stream's
versions run 1..n and its view row is at n; positions have no gaps), the read models equal a
rebuild from the log, and every webhook that was pending reaches a real receiver."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from app.core.clock import SystemClock
from app.core.settings import Settings
from app.events.tables import event_positions, events
from app.main import Services
from tests.conftest import ADMIN_KEY
from tests.factories import City, auth
from tests.projections.test_rebuild import dump
from tests.server import server_process
from tests.webhooks.conftest import subscribe
from tests.webhooks.receiver import Receiver, always
from tests.webhooks.test_processes import prepared_city, server_env

pytestmark = pytest.mark.slow
WRITERS = 6
TYPES = ["problem.submitted", "problem.escalated"]


class Load:
    """Writers that submit problems and escalate them, recording what the server acknowledged."""

    def __init__(self, base: str, city: City) -> None:
        self.base = base
        self.city = city
        self.acked: dict[str, int] = {}  # problem id -> the highest version acknowledged
        self.failed = 0  # requests that got no answer (the kill)
        self.stop = False

    async def writer(self, n: int) -> None:
        async with httpx.AsyncClient(base_url=self.base, headers=auth(ADMIN_KEY), timeout=10) as http:
            i = 0
            while not self.stop:
                i += 1
                body = {
                    "enterprise_id": self.city.enterprise(index=(n + i) % 4),
                    "category": "utilities",
                    "title": f"写入负载 {n}-{i}",
                    "description": "进程被强制终止前后的写入",
                }
                try:
                    created = await http.post("/v1/problems", json=body)
                    assert created.status_code == 201, created.text
                    pid = created.json()["id"]
                    self.acked[pid] = 1
                    escalated = await http.post(f"/v1/problems/{pid}/escalate", json={"reason": "需区级协调"})
                    assert escalated.status_code == 200, escalated.text
                    self.acked[pid] = escalated.json()["version"]
                except httpx.TransportError:
                    self.failed += 1
                    await asyncio.sleep(0.05)


async def offline_services(db_url: str) -> Services:
    """Services on the database with no background work of their own (the test drives them)."""
    services = Services(
        Settings(database_url=db_url, environment="test", admin_api_key=ADMIN_KEY),  # type: ignore[arg-type]
        SystemClock(),
    )
    await services.bootstrap()
    return services


async def test_sigkill_under_write_load_loses_nothing_acknowledged(db_url: str, tmp_path: Path) -> None:
    city = await prepared_city(db_url)
    env = server_env(db_url, tmp_path)
    # The receiver fails until the restart, so that deliveries are pending when the kill comes.
    with Receiver(always(503)) as receiver:
        with server_process(env) as (proc, base):
            async with httpx.AsyncClient(base_url=base, headers=auth(ADMIN_KEY), timeout=10) as http:
                await subscribe(http, receiver, event_types=TYPES)
            load = Load(base, city)
            writers = [asyncio.create_task(load.writer(n)) for n in range(WRITERS)]
            deadline = time.monotonic() + 30
            while len(load.acked) < 40 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            proc.send_signal(signal.SIGKILL)  # mid-load: requests are in flight
            proc.wait(10)
            await asyncio.sleep(0.3)  # the writers notice the dead server
            load.stop = True
            await asyncio.gather(*writers)
        acked = dict(load.acked)
        assert len(acked) >= 40, f"only {len(acked)} problems acknowledged before the kill"
        assert load.failed >= 1, "the kill happened while requests were in flight"

        assert receiver.snapshot(), "deliveries were being attempted before the kill"
        receiver.respond = always(200)
        with server_process(env) as (_, base):
            async with httpx.AsyncClient(base_url=base, headers=auth(ADMIN_KEY), timeout=30) as http:
                for pid, version in acked.items():
                    got = await http.get(f"/v1/problems/{pid}")
                    assert got.status_code == 200, f"acknowledged problem {pid} lost"
                    assert got.json()["version"] >= version, f"acknowledged command on {pid} lost"
            stored = await _stored(db_url)
            wanted = {str(r.event_id) for r in stored if r.type in TYPES}

            def delivered(got: list[Any]) -> bool:
                return {r.json["data"]["event_id"] for r in got if r.answered == 200} >= wanted

            await receiver.wait_for(delivered, timeout=60)
        receiver.assert_all_verified()

    services = await offline_services(db_url)
    try:
        await services.store.sequence()
        await _assert_whole(services)
        await services.projections.catch_up()
        live = await dump(services.db)
        for name in services.projections.names:
            await services.projections.rebuild(name)
        assert await dump(services.db) == live, "the read models differ from a rebuild"
    finally:
        await services.db.dispose()


async def _stored(db_url: str) -> list[Any]:
    services = await offline_services(db_url)
    try:
        async with services.db.read() as conn:
            return list((await conn.execute(sa.select(events.c.event_id, events.c.type))).all())
    finally:
        await services.db.dispose()


async def _assert_whole(services: Services) -> None:
    """No half-written command: each problem stream's versions are 1..n with the view at n,
    and the global positions are 1..N over every event."""
    async with services.db.read() as conn:
        rows = (
            await conn.execute(
                sa.select(events.c.stream_id, sa.func.count(), sa.func.max(events.c.stream_version))
                .where(events.c.stream_id.like("problem-%"))
                .group_by(events.c.stream_id)
            )
        ).all()
        views = dict((await conn.exec_driver_sql("SELECT 'problem-' || id, version FROM problem_view")).all())
        total = (await conn.execute(sa.select(sa.func.count()).select_from(events))).scalar_one()
        positions = (
            await conn.execute(
                sa.select(
                    sa.func.count(),
                    sa.func.min(event_positions.c.position),
                    sa.func.max(event_positions.c.position),
                )
            )
        ).one()
    assert rows, "the log has problems"
    for stream_id, count, top in rows:
        assert count == top, f"{stream_id}: versions have a gap"
        assert views.get(stream_id) == top, (
            f"{stream_id}: the view is at {views.get(stream_id)}, the log at {top}"
        )
    assert len(views) == len(rows)
    assert tuple(positions) == (total, 1, total), f"positions {tuple(positions)} for {total} events"
