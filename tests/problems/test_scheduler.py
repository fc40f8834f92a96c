"""The scheduler on SQLite and PostgreSQL: it finds what is due in the problem view, appends each
automatic action once as the system with its reason, also when two instances run at once, and
routes imported histories as of their dates."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from app.core.clock import ManualClock
from app.core.settings import Settings
from app.main import Services
from app.problems.scheduler import work_lists
from app.projections.problem_view import ProblemFilter, list_query
from app.routing.policy import RoutingPolicy
from tests.conftest import T0
from tests.factories import D1, City, build_city, command, submit
from tests.instances import another_instance
from tests.problems.world import TZ


@pytest.fixture
async def city(services: Services) -> City:
    return await build_city(services, enterprises_per_group=4)


async def events_of(client: httpx.AsyncClient, pid: str) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/problems/{pid}/events")
    assert response.status_code == 200
    result: list[dict[str, Any]] = response.json()
    return result


async def automatic_events(client: httpx.AsyncClient, pid: str) -> list[str]:
    return [e["type"] for e in await events_of(client, pid) if e["metadata"].get("automatic")]


async def auto_escalate_local(client: httpx.AsyncClient) -> None:
    response = await client.put("/v1/routing/rules", json={"auto_escalate": {"local": True}})
    assert response.status_code == 200, response.text


def city_time(month: int, day: int, hour: int = 9) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=TZ)


async def test_each_due_action_is_appended_once_as_the_system_with_its_reason(
    client: httpx.AsyncClient, city: City, services: Services, clock: ManualClock
) -> None:
    await auto_escalate_local(client)
    fg_a = city.function_groups[D1][0]
    # Monday 16 Nov 2026. local: due Thursday 19 Nov.
    local = (await submit(client, city.enterprise(D1, 0)))["id"]
    # at the district with a deadline of Monday 23 Nov: reminded from Friday 20 Nov
    held = (await submit(client, city.enterprise(D1, 1)))["id"]
    await command(client, held, "escalate", {"reason": "x"})
    await command(client, held, "assign", {"lead_unit_id": fg_a, "deadline": "2026-11-23"})
    # resolved on Monday: closed after 5 working days without feedback (from Tuesday 24 Nov)
    resolved = (await submit(client, city.enterprise(D1, 2)))["id"]
    await command(client, resolved, "resolve", {"resolution": "现场解决"})
    # deferred with a review date of Friday 20 Nov
    deferred = (await submit(client, city.enterprise(D1, 3)))["id"]
    plan = [{"step": "申报", "due_on": "2026-11-19"}]
    await command(client, deferred, "defer", {"explanation": "待批", "plan": plan, "review_on": "2026-11-20"})
    closed = (await submit(client, city.enterprise(D1, 4)))["id"]
    await command(client, closed, "resolve", {"resolution": "r"})
    await command(client, closed, "feedback", {"score": 5})

    assert (await services.scheduler.tick()).events == Counter(), "nothing due on Monday"
    clock.set(city_time(11, 20))
    report = await services.scheduler.tick()
    assert report.events == Counter({"problem.overdue": 1, "problem.escalated": 1, "problem.reminded": 2}), (
        report.summary()
    )
    assert (await services.scheduler.tick()).events == Counter(), "each action once"

    events = await events_of(client, local)
    overdue, escalated = events[-2:]
    assert (overdue["type"], escalated["type"]) == ("problem.overdue", "problem.escalated")
    assert overdue["occurred_at"] == escalated["occurred_at"] == "2026-11-20T00:00:00+08:00"
    assert overdue["metadata"]["actor"] == "system" and overdue["metadata"]["role"] == "system"
    assert escalated["metadata"]["automatic"] == "overdue"
    assert escalated["data"]["automatic"] is True
    assert escalated["data"]["reason"].startswith(
        "overdue at the local tier: the deadline 2026-11-19T23:59:59+08:00"
    )
    assert await automatic_events(client, held) == ["problem.reminded"]
    assert [e["data"].get("kind") for e in await events_of(client, deferred)][-1:] == ["review"]
    p = (await client.get(f"/v1/problems/{local}")).json()
    assert (p["tier"], p["status"], p["holder_unit_id"]) == ("district", "open", city.rooms[D1])

    clock.set(city_time(11, 24))
    report = await services.scheduler.tick()
    assert report.events == Counter({"problem.closed": 1, "problem.overdue": 1, "problem.reminded": 1}), (
        report.summary()
    )
    assert (await client.get(f"/v1/problems/{resolved}")).json()["status"] == "closed"
    assert await automatic_events(client, held) == ["problem.reminded", "problem.overdue"]
    assert (await client.get(f"/v1/problems/{held}")).json()["tier"] == "district", "district: not automatic"
    assert [e["data"].get("kind") for e in await events_of(client, deferred)][-2:] == ["review", "deadline"]
    assert await automatic_events(client, closed) == []
    assert (await services.scheduler.tick()).events == Counter()


async def test_two_instances_at_once_append_each_action_once(
    client: httpx.AsyncClient, city: City, services: Services, settings: Settings, clock: ManualClock
) -> None:
    await auto_escalate_local(client)
    ids = [(await submit(client, city.enterprise(D1, i % 8)))["id"] for i in range(24)]
    for pid in ids[:8]:
        await command(client, pid, "resolve", {"resolution": "r"})
    clock.set(city_time(12, 10))  # every local deadline and every feedback window has passed
    async with another_instance(settings, clock) as (other, _):
        # Both work through the same due problems at the same time, without the lease.
        reports = await asyncio.gather(
            services.scheduler.run_due(clock.now()), other.scheduler.run_due(clock.now())
        )
        assert sum(r.failed for r in reports) == 0
        assert (await other.scheduler.tick()).events == Counter()
    appended: Counter[str] = Counter()
    for pid in ids:
        appended.update(await automatic_events(client, pid))
    # 8 closed; 16 overdue locally and escalated; their district deadlines (4 Dec) passed too.
    assert appended == Counter({"problem.closed": 8, "problem.overdue": 32, "problem.escalated": 16})
    assert reports[0].events + reports[1].events == appended, "each counts what it appended itself"


async def test_imported_histories_are_routed_as_of_their_dates(
    client: httpx.AsyncClient, city: City, services: Services, clock: ManualClock
) -> None:
    await auto_escalate_local(client)
    long_ago = T0 - timedelta(days=40)  # Wednesday 7 Oct 2026, in the National Day holidays

    async def imported(index: int, escalated: bool) -> str:
        pid = (await submit(client, city.enterprise(D1, index), occurred_at=long_ago.isoformat()))["id"]
        if escalated:
            at = (long_ago + timedelta(days=1)).isoformat()
            await command(client, pid, "escalate", {"reason": "服务组无法解决", "occurred_at": at})
        return pid

    with_escalation = await imported(0, escalated=True)
    without = await imported(1, escalated=False)
    assert (await services.scheduler.tick()).events == Counter(), "an import is left to settle"
    clock.advance(timedelta(minutes=11))
    await services.scheduler.tick()

    # Its history shows the escalation: not escalated from local again, only marked overdue at
    # the district (whose rule does not escalate), as of the district deadline.
    events = await events_of(client, with_escalation)
    assert [e["type"] for e in events] == ["problem.submitted", "problem.escalated", "problem.overdue"]
    assert events[-1]["data"]["tier"] == "district"
    # 10 working days after Thursday 8 Oct: 9, 10 (a make-up Saturday), 12–16, 19–21 October.
    assert events[-1]["occurred_at"] == "2026-10-22T00:00:00+08:00"

    # Its history does not: escalated as of its local deadline (Saturday 10 Oct, a make-up day).
    events = await events_of(client, without)
    assert [(e["type"], e["occurred_at"]) for e in events[1:]] == [
        ("problem.overdue", "2026-10-11T00:00:00+08:00"),
        ("problem.escalated", "2026-10-11T00:00:00+08:00"),
        ("problem.overdue", "2026-10-24T00:00:00+08:00"),
    ]
    assert (await services.scheduler.tick()).events == Counter()


async def test_the_work_lists_are_range_scans_of_their_indexes(
    services: Services, clock: ManualClock
) -> None:
    policy = RoutingPolicy(services.calendar, await services.rules.current(), {})
    lists = work_lists(clock.now(), policy)
    db = services.db
    explain = "EXPLAIN " if db.is_postgres else "EXPLAIN QUERY PLAN "

    def explained(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> Any:
        return explain + statement, params

    expected = {
        "overdue": "ix_problem_view_pending_overdue",
        "remind": "ix_problem_view_pending_reminder",
        "review": "ix_problem_view_pending_review",
        "close": "ix_problem_view_pending_close",
    }
    async with db.read() as conn:
        if db.is_postgres:  # an empty table: make the planner show which indexes it *can* use
            await conn.exec_driver_sql("SET enable_seqscan = off")
        sa.event.listen(conn.sync_connection, "before_cursor_execute", explained, retval=True)
        for name, listing in lists.items():
            plan = "\n".join(str(row[-1]) for row in (await conn.execute(listing.limit(200))).all())
            assert expected[name] in plan, (name, plan)
        flagged = list_query(ProblemFilter(flags=("unrouted",)), None, clock.now(), after=None, limit=50)
        plan = "\n".join(str(row[-1]) for row in (await conn.execute(flagged)).all())
        assert "ix_problem_view_needs_attention" in plan, plan
        sa.event.remove(conn.sync_connection, "before_cursor_execute", explained)
        if db.is_postgres:
            await conn.exec_driver_sql("RESET enable_seqscan")
