"""`GET /v1/events` on SQLite and PostgreSQL: global order, scope per role, `last_position`
past filtered events, type filters."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from app.feed import reader
from app.main import Services
from tests.factories import D1, D2, City, auth, build_city, command, make_key, submit


@pytest.fixture
async def city(services: Services) -> City:
    return await build_city(services)


async def feed(client: httpx.AsyncClient, services: Services, key: str | None = None, **params: Any) -> Any:
    # PostgreSQL: wait until what has committed has its position (at once on SQLite).
    for _ in range(500):
        await services.store.sequence()
        if not await services.store.unsequenced():
            break
        await asyncio.sleep(0.01)
    headers = auth(key) if key else {}
    response = await client.get("/v1/events", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def test_admin_reads_everything_in_order_without_key_hashes(
    client: httpx.AsyncClient, services: Services, city: City
) -> None:
    pid = (await submit(client, city.enterprise()))["id"]
    page = await feed(client, services, limit=1000)
    positions = [e["position"] for e in page["items"]]
    assert positions == list(range(1, len(positions) + 1))
    assert page["last_position"] == page["head"] == positions[-1]
    types = {e["type"] for e in page["items"]}
    assert {"unit.created", "enterprise.registered", "category.created", "api_key.created"} <= types
    assert all("key_hash" not in e["data"] for e in page["items"] if e["type"] == "api_key.created")
    last = page["items"][-1]
    assert (last["type"], last["problem_id"], last["version"]) == ("problem.submitted", pid, 1)
    assert last["occurred_at"].endswith("+08:00")

    first = await feed(client, services, limit=2)
    assert [e["position"] for e in first["items"]] == [1, 2] and first["last_position"] == 2
    rest = await feed(client, services, after=first["last_position"], limit=1000)
    assert rest["items"][0]["position"] == 3
    only = await feed(client, services, types="problem.*,unit.created", limit=1000)
    assert {e["type"] for e in only["items"]} == {"problem.submitted", "unit.created"}


async def test_other_roles_read_the_events_of_problems_in_their_scope(
    client: httpx.AsyncClient, services: Services, city: City
) -> None:
    portal = await make_key(client, "portal", source="gov-portal")
    mine = (await submit(client, city.enterprise(), key=portal))["id"]
    other = (await submit(client, city.enterprise(D2)))["id"]
    await command(client, mine, "escalate", {"reason": "需要区级协调"})
    await command(client, other, "accept")

    def problems(page: Any) -> list[tuple[str, str]]:
        return [(e["problem_id"], e["type"]) for e in page["items"]]

    seen = await feed(client, services, portal)
    assert problems(seen) == [(mine, "problem.submitted"), (mine, "problem.escalated")]
    assert seen["last_position"] == seen["head"]  # past everything it may not see

    dispatcher = await make_key(client, "dispatcher", district_id=D2)
    assert problems(await feed(client, services, dispatcher)) == [
        (other, "problem.submitted"),
        (other, "problem.accepted"),
    ]
    group = await make_key(client, "handler", unit_id=city.groups[D1][0])
    assert {p for p, _ in problems(await feed(client, services, group))} == {mine}
    commander = await make_key(client, "commander")
    assert len(problems(await feed(client, services, commander))) == 4
    viewer = await make_key(client, "viewer", district_id=D1)
    assert {p for p, _ in problems(await feed(client, services, viewer))} == {mine}

    unauthenticated = await client.get("/v1/events", headers={"Authorization": ""})
    assert unauthenticated.status_code == 401
    assert (await client.get("/v1/events", params={"limit": 0})).status_code == 422


async def test_the_scan_window_bounds_each_read(
    client: httpx.AsyncClient, services: Services, city: City, monkeypatch: pytest.MonkeyPatch
) -> None:
    portal = await make_key(client, "portal", source="gov-portal")
    pid = (await submit(client, city.enterprise(), key=portal))["id"]
    monkeypatch.setattr(reader, "SCAN_WINDOW", 5)
    page = await feed(client, services, portal)
    assert page["items"] == [] and page["last_position"] == 5 < page["head"]
    position = 0
    seen: list[str] = []
    while position < page["head"]:
        step = await feed(client, services, portal, after=position)
        seen += [e["problem_id"] for e in step["items"]]
        assert step["last_position"] > position
        position = step["last_position"]
    assert seen == [pid]
