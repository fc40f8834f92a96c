"""Reference data over HTTP: the routing tree, the enterprise directory, categories — every
change recorded as an event."""

from __future__ import annotations

import httpx
import pytest

from app.directory.service import DEFAULT_CATEGORIES
from app.main import Services
from tests.factories import D1, D2, City, auth, build_city, enterprise_code, make_key


@pytest.fixture
async def city(services: Services) -> City:
    return await build_city(services)


async def test_the_default_categories_exist(client: httpx.AsyncClient) -> None:
    codes = {c["code"] for c in (await client.get("/v1/categories")).json()}
    assert codes == {code for code, _, _ in DEFAULT_CATEGORIES}
    assert codes >= {
        "land",
        "planning_permit",
        "environmental_assessment",
        "financing",
        "utilities",
        "demolition",
        "labour_talent",
        "policy",
        "market_access",
        "other",
    }


async def test_add_and_change_a_category(client: httpx.AsyncClient, services: Services) -> None:
    created = await client.post("/v1/categories", json={"code": "logistics", "name": "物流运输"})
    assert created.status_code == 201 and created.json()["name"] == "物流运输"
    assert (await client.post("/v1/categories", json={"code": "logistics", "name": "x"})).json()[
        "code"
    ] == "category_exists"
    assert (await client.post("/v1/categories", json={"code": "Bad Code", "name": "x"})).status_code == 422
    changed = await client.patch("/v1/categories/logistics", json={"active": False})
    assert changed.json()["active"] is False and changed.json()["version"] == 2
    events = await services.store.read_stream("category-logistics")
    assert [e.type for e in events] == ["category.created", "category.updated"]
    assert events[0].metadata["role"] == "admin"


async def test_the_tree_is_validated(client: httpx.AsyncClient, city: City) -> None:
    cases = [
        (
            {"id": "x1", "name": "组", "kind": "service_group", "parent_id": city.rooms[D1]},
            "invalid_unit",
        ),
        (
            {
                "id": "x2",
                "name": "室",
                "kind": "district_dispatch_room",
                "parent_id": city.command_room,
                "district_id": D1,
            },
            "invalid_unit",
        ),
        ({"id": "x3", "name": "总", "kind": "city_command_room"}, "invalid_unit"),
        ({"id": "x4", "name": "队", "kind": "service_team"}, "invalid_unit"),
        (
            {"id": "x5", "name": "组", "kind": "service_group", "parent_id": "missing"},
            "unknown_unit",
        ),
        (
            {
                "id": city.teams[D1],
                "name": "dup",
                "kind": "service_team",
                "parent_id": city.rooms[D1],
            },
            "unit_exists",
        ),
    ]
    for body, code in cases:
        response = await client.post("/v1/units", json=body)
        assert response.json().get("code") == code, (body, response.text)
        assert response.status_code in (409, 422)
    ok = await client.post(
        "/v1/units",
        json={
            "id": "220102-t2",
            "name": "第二服务队",
            "kind": "service_team",
            "parent_id": city.rooms[D1],
        },
    )
    assert ok.status_code == 201
    unit = ok.json()
    assert (unit["tier"], unit["district_id"], unit["path"]) == (
        "local",
        D1,
        f"{city.command_room}/{city.rooms[D1]}/220102-t2",
    )
    listed = (await client.get("/v1/units", params={"district_id": D1, "kind": "service_team"})).json()
    assert {u["id"] for u in listed["items"]} == {city.teams[D1], "220102-t2"}


async def test_unit_listing_pages_through_the_tree(client: httpx.AsyncClient, city: City) -> None:
    seen = []
    cursor = None
    while True:
        params = {"limit": 4, **({"cursor": cursor} if cursor else {})}
        body = (await client.get("/v1/units", params=params)).json()
        seen += [u["id"] for u in body["items"]]
        cursor = body["next_cursor"]
        if not cursor:
            break
    all_units = (await client.get("/v1/units", params={"limit": 500})).json()["items"]
    assert seen == [u["id"] for u in all_units] and len(seen) == len(set(seen)) == 15


async def test_enterprises_need_a_valid_credit_code(client: httpx.AsyncClient, city: City) -> None:
    good = enterprise_code(D1, 999)
    bad = good[:-1] + ("0" if good[-1] != "0" else "1")
    base = {
        "name": "新企业",
        "district_id": D1,
        "service_unit_id": city.groups[D1][0],
        "address": "某路1号",
    }
    response = await client.post("/v1/enterprises", json={**base, "id": bad})
    assert response.status_code == 422
    assert "check character" in response.json()["detail"]
    assert (
        await client.post("/v1/enterprises", json={**base, "id": "91220102MA1XXXXXXI"})
    ).status_code == 422
    created = await client.post("/v1/enterprises", json={**base, "id": good.lower()})
    assert created.status_code == 201 and created.json()["id"] == good
    assert (await client.post("/v1/enterprises", json={**base, "id": good})).json()[
        "code"
    ] == "enterprise_exists"
    wrong_group = await client.post(
        "/v1/enterprises",
        json={**base, "id": enterprise_code(D1, 998), "service_unit_id": city.groups[D2][0]},
    )
    assert wrong_group.json()["code"] == "invalid_service_unit"


async def test_enterprise_scope(client: httpx.AsyncClient, city: City) -> None:
    dispatcher = await make_key(client, "dispatcher", district_id=D1)
    portal = await make_key(client, "portal")
    listed = (await client.get("/v1/enterprises", headers=auth(dispatcher))).json()["items"]
    assert {e["district_id"] for e in listed} == {D1} and len(listed) == 4
    assert (
        await client.get(f"/v1/enterprises/{city.enterprise(D2)}", headers=auth(dispatcher))
    ).status_code == 404
    assert (await client.get("/v1/enterprises", headers=auth(portal))).json()["items"] == []
    base = {
        "name": "新企业",
        "district_id": D2,
        "service_unit_id": city.groups[D2][0],
        "address": "某路",
    }
    response = await client.post(
        "/v1/enterprises", json={**base, "id": enterprise_code(D2, 500)}, headers=auth(dispatcher)
    )
    assert response.status_code == 403
    own = {
        **base,
        "district_id": D1,
        "service_unit_id": city.groups[D1][1],
        "id": enterprise_code(D1, 501),
    }
    assert (await client.post("/v1/enterprises", json=own, headers=auth(dispatcher))).status_code == 201
