"""Exactly once with two real server processes on one PostgreSQL database, both running the
scheduler: every automatic action is appended once, and no process counts one twice."""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.core.clock import SystemClock
from app.core.settings import Settings
from app.problems import automatic
from app.problems.service import stream_id
from tests.conftest import ADMIN_KEY
from tests.factories import D1, D2, build_city, command, submit
from tests.instances import another_instance
from tests.server import servers

OFFSET = timedelta(days=90)  # the servers live three months ahead: everything is long due


def metric(text: str, name: str) -> Counter[str]:
    """The samples of one Prometheus metric, by their single label's value."""
    found: Counter[str] = Counter()
    for label, value in re.findall(rf'^{name}{{\w+="([^"]*)"}} ([0-9.e+]+)$', text, re.M):
        found[label] += int(float(value))
    return found


async def arrange(client: httpx.AsyncClient, services: Any) -> list[str]:
    """Problems in every state that has automatic actions ahead of it."""
    city = await build_city(services, enterprises_per_group=3)
    rules = {"auto_escalate": {"local": True, "district": True}, "reminder_lead_days": 3}
    assert (await client.put("/v1/routing/rules", json=rules)).status_code == 200
    ids = []
    for i in range(24):
        district = (D1, D2)[i % 2]
        category = ("utilities", "demolition", "land")[i % 3]
        ids.append((await submit(client, city.enterprise(district, i % 6), category=category))["id"])
    for pid in ids[:6]:  # resolved: closed when the feedback window has passed
        await command(client, pid, "resolve", {"resolution": "已解决"})
    ahead = services.calendar.business_date(services.clock.now() + OFFSET)
    deadline = services.calendar.add_working_days(ahead, 2).isoformat()
    for pid in ids[6:9]:  # held at the district, due two working days after the servers' today
        held = await command(client, pid, "escalate", {"reason": "需区级协调"})
        if held["tier"] == "district":
            fg = f"{held['district_id']}-fg-a"
            await command(client, pid, "assign", {"lead_unit_id": fg, "deadline": deadline})
    review = (services.calendar.business_date(services.clock.now()) + timedelta(days=5)).isoformat()
    plan = [{"step": "申报", "due_on": review}]
    for pid in ids[9:11]:  # deferred: a review reminder, then overdue all the way up
        await command(client, pid, "defer", {"explanation": "待批", "plan": plan, "review_on": review})
    return ids


async def expected_events(services: Any, ids: list[str]) -> dict[Any, tuple[str, str]]:
    """Event id → (problem, type) of every automatic action due three months ahead."""
    now = services.clock.now() + OFFSET
    expected = {}
    for pid in ids:
        state, _ = await services.problems.load(pid)
        for action, facts in automatic.plan(state, now, await services.problems.policy(state.district_id)):
            for index, fact in enumerate(facts):
                expected[automatic.event_id(pid, action, index)] = (pid, fact.type)
    return expected


async def automatic_events(services: Any, ids: list[str]) -> list[Any]:
    found = []
    for pid in ids:
        found += [e for e in await services.store.read_stream(stream_id(pid)) if e.metadata.get("automatic")]
    return found


@pytest.mark.postgres_only
async def test_two_server_processes_append_every_automatic_action_once(
    db_url: str, settings: Settings, tmp_path: Path
) -> None:
    async with another_instance(settings, SystemClock()) as (services, client):
        ids = await arrange(client, services)
        expected = await expected_events(services, ids)
        assert set(Counter(t for _, t in expected.values())) == {
            "problem.reminded",
            "problem.overdue",
            "problem.escalated",
            "problem.supervised",
            "problem.closed",
        }
        env = {
            "DATABASE_URL": db_url,
            "ADMIN_API_KEY": ADMIN_KEY,
            "CLOCK_OFFSET_SECONDS": str(int(OFFSET.total_seconds())),
            "SCHEDULER_INTERVAL_SECONDS": "0.2",
            "SERVER_LOG": str(tmp_path / "servers.log"),
        }
        with servers(env, 2) as bases:
            deadline = time.monotonic() + 120
            while {e.event_id for e in await automatic_events(services, ids)} != set(expected):
                assert time.monotonic() < deadline, "the schedulers did not finish"
                await asyncio.sleep(0.2)
            # Let both schedulers tick a few more times over the finished work.
            before = [
                metric(httpx.get(f"{b}/metrics").text, "dispatchroom_scheduler_ticks_total") for b in bases
            ]
            while True:
                now = [
                    metric(httpx.get(f"{b}/metrics").text, "dispatchroom_scheduler_ticks_total")
                    for b in bases
                ]
                if all(sum((n - b).values()) >= 3 for n, b in zip(now, before, strict=True)):
                    break
                assert time.monotonic() < deadline, "the schedulers stopped ticking"
                await asyncio.sleep(0.2)
            counted = [
                metric(httpx.get(f"{b}/metrics").text, "dispatchroom_automatic_events_total") for b in bases
            ]

        appended = await automatic_events(services, ids)
    assert sorted(str(e.event_id) for e in appended) == sorted(str(i) for i in expected), "each once"
    assert all(
        e.metadata["actor"] == "system" and (e.data.get("reason") or e.data.get("note")) for e in appended
    )
    assert counted[0] + counted[1] == Counter(t for _, t in expected.values()), "and counted once"
    assert all(sum(n.values()) > 0 for n in now), "both processes ran the scheduler"
    log = (tmp_path / "servers.log").read_text(encoding="utf-8", errors="replace")
    assert "Traceback" not in log and "refused" not in log, log[-3000:]
