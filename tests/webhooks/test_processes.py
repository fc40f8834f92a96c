"""Real server processes: a SIGKILL while deliveries are pending loses nothing, and two servers
on one PostgreSQL share the deliveries without sending any twice."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from app.core.clock import SystemClock
from app.core.db import Database
from app.core.settings import Settings
from app.events.tables import events
from app.main import Services
from app.webhooks.tables import webhook_attempts, webhook_deliveries
from tests.conftest import ADMIN_KEY
from tests.factories import City, build_city, command, submit
from tests.server import server_process
from tests.webhooks.conftest import subscribe
from tests.webhooks.receiver import Receiver, always

pytestmark = pytest.mark.slow
TYPES = ["problem.submitted", "problem.escalated"]


def server_env(db_url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": db_url,
        "ADMIN_API_KEY": ADMIN_KEY,
        "ENVIRONMENT": "test",
        "WEBHOOK_ALLOWED_TARGETS": "127.0.0.1",
        "WEBHOOK_RETRY_SCHEDULE": ",".join(["0"] + ["1"] * 40),
        "WEBHOOK_TIMEOUT_SECONDS": "5",
        "WEBHOOK_POLL_MS": "50",
        "SEQUENCER_POLL_MS": "5",
        "SERVER_LOG": str(tmp_path / "server.log"),
        **extra,
    }


async def prepared_city(db_url: str) -> City:
    """The test city written straight into the database (no background work in this process)."""
    services = Services(
        Settings(database_url=db_url, environment="test", admin_api_key=ADMIN_KEY),  # type: ignore[arg-type]
        SystemClock(),
    )
    try:
        await services.bootstrap()
        return await build_city(services)
    finally:
        await services.db.dispose()


async def query(db_url: str, stmt: sa.Select[Any]) -> list[Any]:
    db = Database(db_url, pool_size=1)
    try:
        async with db.read() as conn:
            return list((await conn.execute(stmt)).all())
    finally:
        await db.dispose()


async def recorded(db_url: str, n: int) -> list[Any]:
    """The deliveries once `n` of them are recorded as delivered (a moment after the answers)."""
    deadline = time.monotonic() + 30
    while True:
        rows = await query(db_url, sa.select(webhook_deliveries.c.status, webhook_deliveries.c.event_id))
        if [r.status for r in rows] == ["delivered"] * n or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.1)


def client(base: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)


async def test_a_killed_server_loses_no_delivery(db_url: str, tmp_path: Path) -> None:
    city = await prepared_city(db_url)
    env = server_env(db_url, tmp_path)
    with Receiver(always(503)) as receiver:
        with server_process(env) as (proc, base):
            async with client(base) as http:
                await subscribe(http, receiver, event_types=TYPES)
                for i in range(12):
                    pid = (await submit(http, city.enterprise(index=i % 4)))["id"]
                    if i % 2:
                        await command(http, pid, "escalate", {"reason": "需要区级协调"})
                await receiver.wait_count(6)  # attempts are failing and being retried
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
        wanted = {
            str(r.event_id)
            for r in await query(db_url, sa.select(events.c.event_id).where(events.c.type.in_(TYPES)))
        }
        assert len(wanted) == 18
        receiver.respond = always(200)
        with server_process(env):

            def delivered(got: list[Any]) -> bool:
                return {r.json["data"]["event_id"] for r in got if r.answered == 200} >= wanted

            await receiver.wait_for(delivered, timeout=90)
            rows = await recorded(db_url, len(wanted))
        receiver.assert_all_verified()
    assert {str(r.event_id) for r in rows} == wanted and {r.status for r in rows} == {"delivered"}


@pytest.mark.postgres_only
async def test_two_servers_share_delivery_without_sending_twice(db_url: str, tmp_path: Path) -> None:
    city = await prepared_city(db_url)
    env = server_env(db_url, tmp_path, WEBHOOK_CONCURRENCY="4")
    n = 120
    with (
        Receiver(always(200, delay=0.2)) as receiver,
        server_process(env) as (_, a),
        server_process(env) as (_, b),
    ):
        async with client(a) as http_a, client(b) as http_b:
            await subscribe(http_a, receiver, event_types=["problem.submitted"])

            async def submit_some(http: httpx.AsyncClient, count: int, offset: int) -> None:
                for i in range(count):
                    await submit(http, city.enterprise(index=(offset + i) % 4))

            await asyncio.gather(*(submit_some((http_a, http_b)[k % 2], n // 8, k) for k in range(8)))
            await receiver.wait_count(n, timeout=90)

            await recorded(db_url, n)
    got = receiver.snapshot()
    ids = [r.webhook_id for r in got]
    assert len(set(ids)) == n, "every delivery arrived"
    receiver.assert_all_verified()
    attempts = await query(
        db_url,
        sa.select(webhook_attempts.c.delivery_id, webhook_attempts.c.number, webhook_attempts.c.sender),
    )
    # At least once, never twice at once: every request the receiver got is one recorded attempt
    # (a second one only after the first was recorded as failed, e.g. a timeout on a loaded
    # machine), and no attempt number of a delivery was taken by both processes.
    assert Counter(ids) == Counter(a.delivery_id for a in attempts)
    assert len({(a.delivery_id, a.number) for a in attempts}) == len(attempts)
    retried = {a.delivery_id for a in attempts if a.number > 1}
    assert len(retried) <= n // 10, f"only a loaded machine's timeouts are retried: {len(retried)}"
    senders = {a.sender for a in attempts}
    assert len(senders) == 2, f"both processes sent: {senders}"
