"""Delivery to a real receiver on 127.0.0.1, on SQLite and PostgreSQL: every event type arrives
signed (verified by `standardwebhooks`), unit filters, retries, 410, disabling after failing,
redelivery, pings, rotation, timeouts, redirects."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from app.core.security import SYSTEM
from app.main import Services
from app.problems import domain
from app.webhooks.schemas import PROBLEM_EVENT_TYPES
from tests.factories import D1, D2, City, command, submit
from tests.webhooks.conftest import deliveries, eventually, fanned_out, log_of, settled_log, subscribe
from tests.webhooks.receiver import Answer, Receiver, always


def _day(days: int) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).date().isoformat()


async def drive_every_event_type(client: httpx.AsyncClient, services: Services, city: City) -> set[str]:
    """Problems that between them produce each of the sixteen subscribable event types; returns
    the ids of the problems."""
    fg_a, fg_b = city.function_groups[D1]
    pid = (await submit(client, city.enterprise()))["id"]
    await command(client, pid, "escalate", {"reason": "需要区级协调"})
    await command(client, pid, "assign", {"lead_unit_id": fg_b})
    await command(client, pid, "return", {"reason": "不属于本组职责"})
    await command(client, pid, "decide-return", {"accept": True})
    await command(client, pid, "assign", {"lead_unit_id": fg_a, "deadline": _day(20)})
    await command(client, pid, "accept")
    await command(client, pid, "request-extension", {"deadline": _day(40), "reason": "等待材料"})
    await command(client, pid, "decide-extension", {"approve": True})
    await command(client, pid, "supervise", {"note": "请加快"})
    await command(
        client,
        pid,
        "defer",
        {"explanation": "待指标下达", "review_on": _day(30), "plan": [{"step": "申报", "due_on": _day(25)}]},
    )
    await command(client, pid, "resume", {"note": "指标已下达"})
    await services.problems.execute(SYSTEM, pid, lambda s: domain.Remind(reason="deadline near"))
    await command(client, pid, "resolve", {"resolution": "已解决"})
    await command(client, pid, "feedback", {"score": 2, "comment": "未彻底解决"})  # reopens
    await command(client, pid, "resolve", {"resolution": "再次办结"})
    await command(client, pid, "feedback", {"score": 5})  # closes
    withdrawn = (await submit(client, city.enterprise(D2, 0)))["id"]
    await command(client, withdrawn, "withdraw", {"reason": "企业自行解决"})
    # Submitted a month ago (an import), so the local deadline has passed: the system marks it.
    month_ago = (datetime.now(UTC) - timedelta(days=30)).isoformat()
    late = (await submit(client, city.enterprise(D1, 1), occurred_at=month_ago))["id"]
    await services.problems.execute(SYSTEM, late, lambda s: domain.MarkOverdue())
    return {pid, withdrawn, late}


async def test_every_event_type_arrives_signed_with_the_problem_summary(
    client: httpx.AsyncClient, services: Services, city: City, receiver: Receiver
) -> None:
    hook = await subscribe(client, receiver, description="all of it")
    problems = await drive_every_event_type(client, services, city)
    got = await receiver.wait_for(lambda r: {x.type for x in r} >= set(PROBLEM_EVENT_TYPES))
    receiver.assert_all_verified()
    for r in got:
        body = r.json
        data = body["data"]
        assert set(body) == {"type", "timestamp", "data"}
        assert set(data) == {"event_id", "position", "problem_id", "problem", "event"}
        assert data["problem_id"] in problems and data["problem"]["id"] == data["problem_id"]
        assert data["event"]["type"] == body["type"] and data["event"]["event_id"] == data["event_id"]
        assert data["event"]["position"] == data["position"] and data["position"] > 0
        assert "description" not in data["problem"]
        assert "request_hash" not in data["event"]["metadata"]
        assert data["event"]["metadata"]["role"] in ("admin", "system")
        assert body["timestamp"].endswith("+08:00")
        assert r.headers["content-type"] == "application/json"
        assert r.webhook_id.startswith("msg_") and r.headers["webhook-timestamp"].isdigit()
    # The summary is the problem right after the event, not as it is now.
    by_type = {r.type: r.json["data"] for r in got}
    assert by_type["problem.escalated"]["problem"]["status"] == "open"
    assert by_type["problem.escalated"]["problem"]["tier"] == "district"
    assert by_type["problem.accepted"]["problem"]["status"] == "in_progress"
    assert by_type["problem.overdue"]["problem"]["overdue"] is True
    assert by_type["problem.closed"]["problem"]["status"] == "closed"
    # Subscribable types only: progress notes and resumptions are not webhook events.
    assert {r.type for r in got} == set(PROBLEM_EVENT_TYPES)
    ids = [r.webhook_id for r in got]
    assert len(ids) == len(set(ids)), "one delivery per event, each sent once"
    log = await settled_log(client, hook["id"], len(ids))
    assert {d["id"] for d in log} == set(ids)
    assert all(d["status"] == "delivered" and d["attempt_count"] == 1 for d in log)
    first = log[0]["attempts"][0]
    assert first["status_code"] == 200 and first["outcome"] == "delivered" and first["response"] == "ok"
    assert first["latency_ms"] >= 0 and first["next_retry_at"] is None


async def test_unit_filter_follows_the_units_involved(
    client: httpx.AsyncClient, services: Services, city: City
) -> None:
    fg_a, fg_b = city.function_groups[D1]
    with Receiver() as team, Receiver() as group_b, Receiver() as elsewhere:
        await subscribe(client, team, unit_id=city.teams[D1])
        await subscribe(client, group_b, unit_id=fg_b)
        other = await subscribe(client, elsewhere, unit_id=city.teams[D2])
        pid = (await submit(client, city.enterprise()))["id"]
        await command(client, pid, "escalate", {"reason": "需要区级协调"})
        await command(client, pid, "assign", {"lead_unit_id": fg_b})
        await command(client, pid, "return", {"reason": "不属于本组职责"})
        await command(client, pid, "decide-return", {"accept": True})
        await command(client, pid, "assign", {"lead_unit_id": fg_a})
        await fanned_out(services)
        # The team covers its service groups, one of which reported the problem: everything.
        got = await team.wait_for(lambda r: len(r) == 5)
        assert [r.type for r in sorted(got, key=lambda r: r.json["data"]["position"])] == [
            "problem.submitted",
            "problem.escalated",
            "problem.assigned",
            "problem.returned",
            "problem.assigned",
        ]
        # The lead unit hears of its assignment and of the return that takes the problem away
        # from it, not of what happened before it was involved or after.
        got = await group_b.wait_for(lambda r: len(r) == 2)
        assert sorted(r.type for r in got) == ["problem.assigned", "problem.returned"]
        assert await deliveries(services, other["id"]) == []
        for r in (team, group_b):
            r.assert_all_verified()
