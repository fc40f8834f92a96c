"""Keys, roles and scope: no key → 401; wrong role → 403; outside the scope a problem does not
exist (404, so that existence does not leak)."""

from __future__ import annotations

import hashlib

import httpx
import pytest
import sqlalchemy as sa

from app.core.security import api_keys
from app.main import Services
from tests.conftest import ADMIN_KEY
from tests.factories import D1, D2, City, auth, build_city, command, make_key, submit


@pytest.fixture
async def city(services: Services) -> City:
    return await build_city(services)


async def test_no_key_or_a_bad_key_is_401(client: httpx.AsyncClient) -> None:
    no_key = await client.get("/v1/problems", headers={"Authorization": ""})
    assert no_key.status_code == 401 and no_key.json()["code"] == "unauthorized"
    assert no_key.headers["www-authenticate"].startswith("Bearer")
    bad = await client.get("/v1/problems", headers=auth("dr_not_a_real_key"))
    assert bad.status_code == 401
    assert (
        await client.get("/v1/problems", headers={"Authorization": f"Basic {ADMIN_KEY}"})
    ).status_code == 401


async def test_keys_are_shown_once_and_stored_hashed(client: httpx.AsyncClient, services: Services) -> None:
    created = await client.post("/v1/api-keys", json={"name": "门户", "role": "portal", "source": "portal-a"})
    assert created.status_code == 201
    body = created.json()
    key = body["key"]
    assert key.startswith("dr_") and len(key) > 40
    listed = (await client.get("/v1/api-keys")).json()
    assert all("key" not in k for k in listed) and any(k["id"] == body["id"] for k in listed)
    async with services.db.read() as conn:
        rows = (await conn.execute(sa.select(api_keys))).all()
    stored = " ".join(str(tuple(r)) for r in rows)
    assert key not in stored and ADMIN_KEY not in stored
    assert hashlib.sha256(key.encode()).hexdigest() in stored
    me = (await client.get("/v1/me", headers=auth(key))).json()
    assert (me["role"], me["source"]) == ("portal", "portal-a")


async def test_revocation_takes_effect_on_the_next_request(client: httpx.AsyncClient) -> None:
    key = await make_key(client, "viewer")
    assert (await client.get("/v1/problems", headers=auth(key))).status_code == 200
    key_id = (await client.get("/v1/me", headers=auth(key))).json()["id"]
    assert (await client.delete(f"/v1/api-keys/{key_id}")).json()["revoked_at"] is not None
    assert (await client.get("/v1/problems", headers=auth(key))).status_code == 401


async def test_key_scope_is_validated(client: httpx.AsyncClient, city: City) -> None:
    for body, code in [
        ({"name": "h", "role": "handler"}, "invalid_key_scope"),
        ({"name": "h", "role": "handler", "unit_id": "nope"}, "unknown_unit"),
        ({"name": "d", "role": "dispatcher"}, "invalid_key_scope"),
        (
            {"name": "d", "role": "dispatcher", "unit_id": city.function_groups[D1][0]},
            "invalid_key_scope",
        ),
        ({"name": "c", "role": "commander", "district_id": D1}, "invalid_key_scope"),
    ]:
        response = await client.post("/v1/api-keys", json=body)
        assert response.status_code == 422 and response.json()["code"] == code, body
    room_key = await make_key(client, "dispatcher", unit_id=city.rooms[D2])
    assert (await client.get("/v1/me", headers=auth(room_key))).json()["district_id"] == D2


async def test_wrong_role_is_403(client: httpx.AsyncClient, city: City) -> None:
    dispatcher = await make_key(client, "dispatcher", district_id=D1)
    viewer = await make_key(client, "viewer")
    for key in (dispatcher, viewer):
        for method, path, body in [
            (
                "POST",
                "/v1/units",
                {"id": "x", "name": "x", "kind": "service_team", "parent_id": city.rooms[D1]},
            ),
            ("POST", "/v1/categories", {"code": "newcat", "name": "新"}),
            ("GET", "/v1/api-keys", None),
            ("POST", "/v1/api-keys", {"name": "x", "role": "admin"}),
        ]:
            response = await client.request(method, path, json=body, headers=auth(key))
            assert response.status_code == 403, (method, path)
            assert response.json()["code"] == "forbidden"
    body = {
        "enterprise_id": city.enterprise(),
        "category": "utilities",
        "title": "t",
        "description": "d",
    }
    assert (await client.post("/v1/problems", json=body, headers=auth(viewer))).status_code == 403


async def test_a_handler_sees_and_acts_on_its_units_problems_only(
    client: httpx.AsyncClient, city: City
) -> None:
    g1 = city.groups[D1][0]
    fg_a, fg_b = city.function_groups[D1]
    mine = (await submit(client, city.enterprise(D1, 0)))["id"]  # covered by g1
    theirs = (await submit(client, city.enterprise(D1, 2)))["id"]  # covered by g2
    g1_key = await make_key(client, "handler", unit_id=g1)
    team_key = await make_key(client, "handler", unit_id=city.teams[D1])
    fg_key = await make_key(client, "handler", unit_id=fg_a)

    listed = {p["id"] for p in (await client.get("/v1/problems", headers=auth(g1_key))).json()["items"]}
    assert listed == {mine}
    team_listed = {
        p["id"] for p in (await client.get("/v1/problems", headers=auth(team_key))).json()["items"]
    }
    assert team_listed == {mine, theirs}, "a team sees what its groups hold"
    for path in (f"/v1/problems/{theirs}", f"/v1/problems/{theirs}/events"):
        response = await client.get(path, headers=auth(g1_key))
        assert response.status_code == 404 and response.json()["code"] == "not_found"
    assert (
        await client.post(f"/v1/problems/{theirs}/accept", json={}, headers=auth(g1_key))
    ).status_code == 404
    assert (await command(client, mine, "accept", key=g1_key))["status"] == "in_progress"
    # The function group sees nothing until the room assigns to it; then it leads, and the
    # reporting group keeps following (谁发现谁跟踪).
    assert (await client.get(f"/v1/problems/{mine}", headers=auth(fg_key))).status_code == 404
    await command(client, mine, "escalate", {"reason": "x"}, key=g1_key)
    await command(client, mine, "assign", {"lead_unit_id": fg_a, "cooperating_unit_ids": [fg_b]})
    assert (await client.get(f"/v1/problems/{mine}", headers=auth(fg_key))).status_code == 200
    assert (await client.get(f"/v1/problems/{mine}", headers=auth(g1_key))).status_code == 200
    refused = await client.post(
        f"/v1/problems/{mine}/resolve", json={"resolution": "x"}, headers=auth(g1_key)
    )
    assert refused.status_code == 403 and refused.json()["code"] == "not_permitted"
    assert (await command(client, mine, "accept", key=fg_key))["status"] == "in_progress"


async def test_a_dispatcher_sees_its_district(client: httpx.AsyncClient, city: City) -> None:
    d1 = (await submit(client, city.enterprise(D1, 0)))["id"]
    d2 = (await submit(client, city.enterprise(D2, 0)))["id"]
    key = await make_key(client, "dispatcher", district_id=D1)
    listed = {p["id"] for p in (await client.get("/v1/problems", headers=auth(key))).json()["items"]}
    assert listed == {d1}
    assert (await client.get(f"/v1/problems/{d2}", headers=auth(key))).status_code == 404
    await command(client, d1, "escalate", {"reason": "x"})
    assigned = await command(client, d1, "assign", {"lead_unit_id": city.function_groups[D1][0]}, key=key)
    assert assigned["status"] == "assigned"
    body = {
        "enterprise_id": city.enterprise(D2, 0),
        "category": "utilities",
        "title": "t",
        "description": "d",
    }
    other = await client.post("/v1/problems", json=body, headers=auth(key))
    assert other.status_code == 422 and other.json()["code"] == "unknown_enterprise"


async def test_a_portal_follows_what_it_submitted(client: httpx.AsyncClient, city: City) -> None:
    portal = await make_key(client, "portal", source="gov-portal")
    other = await make_key(client, "portal", source="other-portal")
    pid = (await submit(client, city.enterprise(), key=portal))["id"]
    assert (await client.get(f"/v1/problems/{pid}", headers=auth(portal))).json()["source"] == "gov-portal"
    assert (await client.get(f"/v1/problems/{pid}", headers=auth(other))).status_code == 404
    assert [p["id"] for p in (await client.get("/v1/problems", headers=auth(other))).json()["items"]] == []
    await command(client, pid, "resolve", {"resolution": "done"})
    assert (await command(client, pid, "feedback", {"score": 5}, key=portal))["status"] == "closed"
    spoof = {
        "enterprise_id": city.enterprise(),
        "category": "utilities",
        "title": "t",
        "description": "d",
        "source": "other-portal",
    }
    assert (await client.post("/v1/problems", json=spoof, headers=auth(portal))).status_code == 403


async def test_viewers_read_but_never_write(client: httpx.AsyncClient, city: City) -> None:
    pid = (await submit(client, city.enterprise(D2, 0)))["id"]
    viewer = await make_key(client, "viewer")
    district_viewer = await make_key(client, "viewer", district_id=D1)
    assert (await client.get(f"/v1/problems/{pid}", headers=auth(viewer))).status_code == 200
    assert (await client.get(f"/v1/problems/{pid}", headers=auth(district_viewer))).status_code == 404
    refused = await client.post(f"/v1/problems/{pid}/progress", json={"note": "x"}, headers=auth(viewer))
    assert refused.status_code == 403


async def test_a_handler_reports_in_its_own_name_only(client: httpx.AsyncClient, city: City) -> None:
    """A service group may not record a problem as found by another group (it would hand that
    group the reporter's rights and lose sight of it itself); a team may name its groups."""
    g1, g2 = city.groups[D1]
    body = {
        "enterprise_id": city.enterprise(D1, 2),
        "category": "utilities",
        "title": "t",
        "description": "d",
        "reporter_unit_id": g2,
    }
    g1_key = await make_key(client, "handler", unit_id=g1)
    refused = await client.post("/v1/problems", json=body, headers=auth(g1_key))
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    team_key = await make_key(client, "handler", unit_id=city.teams[D1])
    made = await client.post("/v1/problems", json=body, headers=auth(team_key))
    assert made.status_code == 201 and made.json()["reporter_unit_id"] == g2
    own = await client.post("/v1/problems", json={**body, "reporter_unit_id": None}, headers=auth(g1_key))
    assert own.status_code == 201 and own.json()["reporter_unit_id"] == g1
