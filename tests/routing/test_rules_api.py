"""`/v1/routing/rules` over HTTP on SQLite and PostgreSQL: versions, If-Match, validation, the
history of who changed what, and the rules at work on problems (proposals, unrouted, the version
that routed each problem), in this process and in another."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from app.core.settings import Settings
from app.main import Services
from tests.factories import D1, D2, City, auth, build_city, command, make_key, submit
from tests.instances import another_instance


@pytest.fixture
async def city(services: Services) -> City:
    return await build_city(services)


def rules_body(city: City, **extra: Any) -> dict[str, Any]:
    fg_a, fg_b = city.function_groups[D1]
    return {
        "routes": [
            {
                "district_id": D1,
                "category": "utilities",
                "lead_unit_id": fg_a,
                "cooperating_unit_ids": [fg_b],
            },
            {"district_id": D1, "category": "land", "lead_unit_id": fg_b},
        ],
        "city_categories": ["demolition"],
        **extra,
    }


async def put_rules(client: httpx.AsyncClient, body: dict[str, Any], **headers: str) -> httpx.Response:
    return await client.put("/v1/routing/rules", json=body, headers=headers)


async def test_the_defaults_are_version_0(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/routing/rules")
    assert response.status_code == 200 and response.headers["etag"] == '"0"'
    rules = response.json()
    assert rules["version"] == 0 and rules["routes"] == [] and rules["changed_by"] is None
    assert rules["deadlines"] == {"local": 3, "district": 10, "city": 20}
    assert (rules["feedback_window_days"], rules["return_window_days"], rules["max_returns"]) == (5, 1, 2)
    assert rules["auto_escalate"] == {"local": False, "district": False}


async def test_a_change_is_a_new_version_with_its_history(
    client: httpx.AsyncClient, city: City, services: Services
) -> None:
    response = await put_rules(client, {**rules_body(city), "note": "初版规则"}, **{"If-Match": '"0"'})
    assert response.status_code == 200, response.text
    assert response.headers["etag"] == '"1"'
    v1 = response.json()
    assert v1["version"] == 1 and v1["changed_by"].startswith("admin_") and v1["note"] == "初版规则"
    assert v1["routes"][0]["cooperating_unit_ids"] == [city.function_groups[D1][1]]
    assert (await client.get("/v1/routing/rules")).json() == v1

    changed = await put_rules(
        client, {**rules_body(city), "max_returns": 3, "routes": []}, **{"If-Match": '"1"'}
    )
    assert changed.json()["version"] == 2
    # the same rules again: nothing changes, no new version
    assert (await put_rules(client, {**rules_body(city), "max_returns": 3, "routes": []})).json()[
        "version"
    ] == 2

    history = (await client.get("/v1/routing/rules/history")).json()
    assert [(h["version"], h["changes"]) for h in history["items"]] == [
        (
            2,
            {
                "settings": ["max_returns"],
                "routes_added": [],
                "routes_removed": [f"{D1}/land", f"{D1}/utilities"],
                "routes_changed": [],
            },
        ),
        (
            1,
            {
                "settings": ["city_categories"],
                "routes_added": [f"{D1}/land", f"{D1}/utilities"],
                "routes_removed": [],
                "routes_changed": [],
            },
        ),
    ]
    page = (await client.get("/v1/routing/rules/history", params={"limit": 1})).json()
    rest = (await client.get("/v1/routing/rules/history", params={"cursor": page["next_cursor"]})).json()
    assert [h["version"] for h in page["items"] + rest["items"]] == [2, 1]
    assert (await client.get("/v1/routing/rules", params={"version": 1})).json() == v1
    assert (await client.get("/v1/routing/rules", params={"version": 9})).status_code == 404
    events = await services.store.read_stream("routing-rules")
    assert [(e.type, e.data["version"], e.metadata["role"]) for e in events] == [
        ("routing.rules_changed", 1, "admin"),
        ("routing.rules_changed", 2, "admin"),
    ]


async def test_a_stale_if_match_is_412_and_writes_nothing(client: httpx.AsyncClient, city: City) -> None:
    assert (await put_rules(client, rules_body(city))).json()["version"] == 1
    stale = await put_rules(client, {**rules_body(city), "max_returns": 5}, **{"If-Match": '"0"'})
    assert stale.status_code == 412 and stale.json()["code"] == "precondition_failed"
    assert stale.json()["current_version"] == 1
    assert (await client.get("/v1/routing/rules")).json()["max_returns"] == 2


async def test_invalid_rules_are_422_with_every_error_and_write_nothing(
    client: httpx.AsyncClient, city: City
) -> None:
    fg_a = city.function_groups[D1][0]
    body = {
        "routes": [
            {"district_id": D1, "category": "utilities", "lead_unit_id": "nope"},
            {"district_id": D1, "category": "land", "lead_unit_id": city.rooms[D1]},
            {"district_id": D2, "category": "land", "lead_unit_id": fg_a},
            {"district_id": D1, "category": "unknown_cat", "lead_unit_id": fg_a},
        ],
        "city_categories": ["no_such_category"],
    }
    response = await put_rules(client, body)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["code"] == "invalid_rules"
    assert [e["loc"] for e in problem["errors"]] == [
        ["body", "routes", 0, "lead_unit_id"],
        ["body", "routes", 1, "lead_unit_id"],
        ["body", "routes", 2, "lead_unit_id"],
        ["body", "routes", 3, "category"],
        ["body", "city_categories"],
    ]
    assert "district_dispatch_room, not a district_function_group" in problem["errors"][1]["msg"]
    assert f"belongs to district {D1}, not {D2}" in problem["errors"][2]["msg"]
    bad_shape = await put_rules(client, {"deadlines": {"local": 0}, "auto_escalate": {"city": True}})
    assert bad_shape.status_code == 422 and len(bad_shape.json()["errors"]) == 2
    assert (await client.get("/v1/routing/rules")).json()["version"] == 0


async def test_only_admins_change_the_rules_and_every_key_reads_them(
    client: httpx.AsyncClient, city: City
) -> None:
    dispatcher = await make_key(client, "dispatcher", district_id=D1)
    refused = await client.put("/v1/routing/rules", json=rules_body(city), headers=auth(dispatcher))
    assert refused.status_code == 403
    assert (await client.get("/v1/routing/rules", headers=auth(dispatcher))).status_code == 200
    assert (
        await client.get("/v1/routing/rules", headers={"Authorization": "Bearer nope"})
    ).status_code == 401


async def test_the_rules_route_problems(client: httpx.AsyncClient, city: City) -> None:
    fg_a, fg_b = city.function_groups[D1]
    before = (await submit(client, city.enterprise()))["id"]
    p = await command(client, before, "escalate", {"reason": "需区级协调"})
    assert (p["status"], p["unrouted"], p["flags"], p["needs_attention"]) == (
        "open",
        True,
        ["unrouted"],
        True,
    )
    assert p["rule_version"] == 0
    refused = await command(client, before, "assign", {}, expect=422)
    assert refused["code"] == "lead_unit_required"

    assert (await put_rules(client, rules_body(city))).status_code == 200
    listed = (await client.get("/v1/problems", params={"flag": "unrouted"})).json()["items"]
    assert [x["id"] for x in listed] == [before], "flagged until assigned, under whatever rules"
    p = await command(client, before, "assign", {})
    assert (p["lead_unit_id"], p["cooperating_unit_ids"], p["rule_version"], p["flags"]) == (
        fg_a,
        [fg_b],
        1,
        [],
    )
    events = (await client.get(f"/v1/problems/{before}/events")).json()
    assert events[-1]["data"]["proposed"] is True and events[-1]["data"]["rule_version"] == 1

    # the room overrides the proposal; the version in force is still recorded
    other = (await submit(client, city.enterprise(D1, 1)))["id"]
    await command(client, other, "escalate", {"reason": "x"})
    p = await command(client, other, "assign", {"lead_unit_id": fg_b})
    assert (p["lead_unit_id"], p["cooperating_unit_ids"], p["rule_version"]) == (fg_b, [], 1)

    # city jurisdiction skips the district room
    demolition = (await submit(client, city.enterprise(), category="demolition"))["id"]
    p = await command(client, demolition, "escalate", {"reason": "征地拆迁"})
    assert (p["tier"], p["holder_unit_id"], p["unrouted"]) == ("city", city.command_room, False)
    assert (await client.get("/v1/problems", params={"needs_attention": "true"})).json()["items"] == []


@pytest.fixture
async def second_process(settings: Settings, app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with another_instance(settings, routing_refresh_seconds=0.2) as (_, client):
        yield client


async def test_another_process_sees_a_change_within_the_refresh_interval(
    client: httpx.AsyncClient, second_process: httpx.AsyncClient, city: City
) -> None:
    fg_a = city.function_groups[D1][0]
    pid = (await submit(client, city.enterprise()))["id"]
    await command(client, pid, "escalate", {"reason": "x"})
    await command(second_process, pid, "progress", {"note": "the other process has loaded the rules"})
    assert (await put_rules(client, rules_body(city))).status_code == 200
    deadline = time.monotonic() + 10
    while True:
        response = await second_process.post(f"/v1/problems/{pid}/assign", json={})
        if response.status_code == 200:
            break
        assert response.json()["code"] == "lead_unit_required"
        assert time.monotonic() < deadline, "the other process never saw the new rules"
        await asyncio.sleep(0.05)
    assert (response.json()["lead_unit_id"], response.json()["rule_version"]) == (fg_a, 1)
