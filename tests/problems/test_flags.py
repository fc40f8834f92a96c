"""Problems flagged for the commander: `unrouted` (no rule at the district room) and
`returned_too_often` (more returns than the rules' `max_returns`), shown and filterable."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from app.main import Services
from tests.factories import D1, City, auth, build_city, command, make_key, submit


@pytest.fixture
async def city(services: Services) -> City:
    return await build_city(services)


async def ids(client: httpx.AsyncClient, key: str | None = None, **params: Any) -> set[str]:
    headers = auth(key) if key else {}
    response = await client.get("/v1/problems", params={"limit": 100, **params}, headers=headers)
    assert response.status_code == 200, response.text
    return {p["id"] for p in response.json()["items"]}


async def test_a_problem_returned_more_than_max_returns_is_flagged(
    client: httpx.AsyncClient, city: City
) -> None:
    fg_a, fg_b = city.function_groups[D1]
    quiet = (await submit(client, city.enterprise(D1, 1)))["id"]
    pid = (await submit(client, city.enterprise()))["id"]
    p = await command(client, pid, "escalate", {"reason": "需区级协调"})
    assert p["flags"] == ["unrouted"], "no rule for utilities in this district"
    for n, lead in enumerate([fg_a, fg_b, fg_a], start=1):
        await command(client, pid, "assign", {"lead_unit_id": lead})
        await command(client, pid, "return", {"reason": "不属于本组职责"})
        p = await command(client, pid, "decide-return", {"accept": True})
        assert p["returns"] == n and p["status"] == "open"
        assert ("returned_too_often" in p["flags"]) is (n > 2), n
    assert (p["flags"], p["needs_attention"]) == (["unrouted", "returned_too_often"], True)
    events = (await client.get(f"/v1/problems/{pid}/events")).json()
    assert [e["data"]["flagged"] for e in events if e["type"] == "problem.returned"] == [False, False, True]

    commander = await make_key(client, "commander")
    assert await ids(client, commander, needs_attention="true") == {pid}
    assert await ids(client, commander, flag="returned_too_often") == {pid}
    assert await ids(client, commander, flag="unrouted,returned_too_often") == {pid}
    assert await ids(client, commander, needs_attention="false") == {quiet}
    p = await command(client, pid, "assign", {"lead_unit_id": fg_b})
    assert p["flags"] == ["returned_too_often"], "assigned: routed now, but still returned too often"
    assert await ids(client, flag="unrouted") == set()
    assert await ids(client, flag="returned_too_often", status="assigned") == {pid}
    bad = await client.get("/v1/problems", params={"flag": "lonely"})
    assert bad.status_code == 422 and bad.json()["code"] == "validation_failed"


async def test_the_rules_set_how_many_returns_are_too_many(client: httpx.AsyncClient, city: City) -> None:
    assert (await client.put("/v1/routing/rules", json={"max_returns": 0})).status_code == 200
    fg_a = city.function_groups[D1][0]
    pid = (await submit(client, city.enterprise()))["id"]
    await command(client, pid, "escalate", {"reason": "x"})
    await command(client, pid, "assign", {"lead_unit_id": fg_a})
    await command(client, pid, "return", {"reason": "不属于本组职责"})
    refused = await command(client, pid, "decide-return", {"accept": False})
    assert refused["flags"] == [] and refused["lead_unit_id"] == fg_a, "a refused return is no return"
    await command(client, pid, "return", {"reason": "确实不属于"})
    p = await command(client, pid, "decide-return", {"accept": True})
    assert p["flags"] == ["unrouted", "returned_too_often"]
