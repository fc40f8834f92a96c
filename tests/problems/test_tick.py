"""`dispatchroom tick`: the automatic actions for cron, as a real process."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from app.core.clock import SystemClock
from app.core.settings import Settings
from tests.factories import D1, build_city, command, submit
from tests.instances import another_instance
from tests.server import dispatchroom


async def test_tick_appends_what_is_due_once_and_says_so(db_url: str, settings: Settings) -> None:
    async with another_instance(settings, SystemClock()) as (services, client):
        city = await build_city(services)
        pid = (await submit(client, city.enterprise(D1)))["id"]
        env = {"DATABASE_URL": db_url, "CLOCK_OFFSET_SECONDS": str(int(timedelta(days=30).total_seconds()))}
        first = await asyncio.to_thread(dispatchroom, "tick", env=env)
        assert first.returncode == 0, first.stdout + first.stderr
        assert first.stdout.strip() == "1 problem.overdue"
        again = await asyncio.to_thread(dispatchroom, "tick", env=env)
        assert again.returncode == 0 and again.stdout.strip() == "nothing due"
        events = (await client.get(f"/v1/problems/{pid}/events")).json()
        assert [(e["type"], e["metadata"]["role"]) for e in events][-1] == ("problem.overdue", "system")
        await command(client, pid, "progress", {"note": "the problem is still usable"})
